"""The sidecar configurations mcpgw ships or generates, checked by the sidecar binary itself
(`mcpgw-sidecar --config … check-config`): the Kubernetes ConfigMap (deploy/k8s/base/sidecar.toml)
with the environment its Deployment gives it, and `make run`'s for both upstream logins.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from stack import ROOT, bin_dir

sys.path.insert(0, str(ROOT / "deploy" / "tools"))

import render  # noqa: E402
import run  # noqa: E402

# What deploy/k8s/base/sidecar.yaml passes as environment (values made up; never used to connect).
K8S_ENV = {
    "MCPGW_REDIS_URL": "redis://:secret@redis-0.redis:6379",
    "MCPGW_UPSTREAM_CLIENT_ID": "github-app-id",
    "MCPGW_UPSTREAM_CLIENT_SECRET": "github-app-secret",
}


def check_config(path, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
    return subprocess.run(
        [str(bin_dir() / "mcpgw-sidecar"), "--config", str(path), "check-config"],
        env={**clean, **env}, capture_output=True, text=True, timeout=30,
    )


def test_the_kubernetes_sidecar_config_is_accepted_with_the_deployments_environment():
    out = check_config(ROOT / "deploy/k8s/base/sidecar.toml", K8S_ENV)
    assert out.returncode == 0, out.stderr
    assert "github-app-secret" not in out.stdout + out.stderr


def test_the_kubernetes_sidecar_config_needs_the_upstream_credentials():
    env = {k: v for k, v in K8S_ENV.items() if k != "MCPGW_UPSTREAM_CLIENT_ID"}
    out = check_config(ROOT / "deploy/k8s/base/sidecar.toml", env)
    assert out.returncode == 2
    assert "upstream.client_id" in out.stderr


@pytest.mark.parametrize("upstream", ["oidc", "github"])
def test_make_runs_sidecar_config_is_accepted(tmp_path, upstream, monkeypatch):
    path = tmp_path / "mcpgw.toml"
    path.write_text((ROOT / "mcpgw.toml").read_text().replace('upstream = "oidc"', f'upstream = "{upstream}"'))
    cfg = render.load_config(path)
    assert cfg.upstream == upstream
    issuer = "http://127.0.0.1:9090" if upstream == "oidc" else None
    sidecar_toml = tmp_path / "sidecar.toml"
    sidecar_toml.write_text(run.toml_text(run.sidecar_config(cfg, 8090, 6379, issuer)))
    monkeypatch.setenv("GITHUB_CLIENT_ID", "gh-id")
    monkeypatch.setenv("GITHUB_CLIENT_SECRET", "gh-secret")
    out = check_config(sidecar_toml, run.sidecar_env(cfg))
    assert out.returncode == 0, out.stderr
