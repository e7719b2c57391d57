"""The gateway as `make run` starts it, for the full-stack tests: deploy/tools/run.py with a
configuration of the test's own (free ports, a state directory under the test's tmp_path), until
the test ends; then Ctrl-C (SIGINT), as a user stops it, and a check that every process it
started is gone.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
START_TIMEOUT = 300.0
STOP_TIMEOUT = 30.0


def bin_dir() -> Path:
    """Where mcpgw-sidecar and mcpgw-bridge were built (`make run-build`; MCPGW_BIN_DIR overrides)."""
    if os.environ.get("MCPGW_BIN_DIR"):
        return Path(os.environ["MCPGW_BIN_DIR"])
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"


def missing_binaries() -> list[str]:
    return [b for b in ("mcpgw-sidecar", "mcpgw-bridge") if not (bin_dir() / b).exists()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Stack:
    """A running `make run` stack: its stack.json plus the runner process."""

    proc: subprocess.Popen
    state_dir: Path
    info: dict
    log: Path

    @property
    def url(self) -> str:
        return self.info["public_url"]

    def logs(self) -> str:
        parts = [f"--- run.py\n{_tail(self.log)}"]
        parts += [f"--- {p.name}\n{_tail(p)}" for p in sorted(self.state_dir.glob("*.log"))]
        return "\n".join(parts)

    def refresh(self) -> dict:
        """Reads stack.json again (run.py rewrites it when it restarts a process)."""
        self.info = json.loads((self.state_dir / "stack.json").read_text())
        return self.info

    def stop(self) -> None:
        """Ctrl-C; the runner must exit 0 and leave none of its processes behind."""
        if self.proc.poll() is None:
            self.refresh()
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"run.py did not stop within {STOP_TIMEOUT}s of Ctrl-C\n{self.logs()}")
        assert self.proc.returncode == 0, f"run.py exited {self.proc.returncode}\n{self.logs()}"
        left = {n: p for n, p in self.info["pids"].items() if alive(p)}
        assert not left, f"processes left behind after Ctrl-C: {left}"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(tmp: Path, servers_toml: str, *, login_toml: str = "", port: int | None = None,
          env: dict[str, str] | None = None) -> Stack:
    """Starts run.py with [gateway] on a free port, internal ports free, `login_toml` added to
    [login], `servers_toml` (the [servers.*] tables) and `env` added to its environment, in `tmp`;
    returns once stack.json says everything is up."""
    port = port or free_port()
    state = tmp / "state"
    config = tmp / "mcpgw.toml"
    config.write_text(
        f'[gateway]\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\n'
        f'state_dir = "{state}"\nsidecar_port = 0\nbridge_ports_from = 0\n\n'
        f'[login]\nupstream = "oidc"\n{login_toml}\n\n{servers_toml}'
    )
    log = tmp / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(PYTHON), str(ROOT / "deploy/tools/run.py"), "--config", str(config),
             "--bin-dir", str(bin_dir())],
            cwd=ROOT, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
        )
    stack_json = state / "stack.json"
    deadline = time.monotonic() + START_TIMEOUT
    while not stack_json.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stack = Stack(proc, state, {"pids": {}}, log)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise AssertionError(f"make run's stack did not come up\n{stack.logs()}")
        time.sleep(0.1)
    return Stack(proc, state, json.loads(stack_json.read_text()), log)
