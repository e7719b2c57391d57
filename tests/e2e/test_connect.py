"""README's first tool call: `deploy/tools/connect.py <server URL> echo '{...}'` against the
`make run` stack, with a browser stand-in (tests/e2e/browse.py, through Python's `webbrowser` and
the BROWSER variable) doing what the user does in the browser.
"""

from __future__ import annotations

import os
import subprocess

from stack import PYTHON, ROOT


def test_connect_py_logs_in_and_calls_a_tool(stack):
    browser = f"{PYTHON} {ROOT / 'tests/e2e/browse.py'} bob %s"
    out = subprocess.run(
        [str(PYTHON), str(ROOT / "deploy/tools/connect.py"), f"{stack.url}/everything/mcp",
         "echo", '{"message": "hello from the README"}'],
        cwd=ROOT, env={**os.environ, "BROWSER": browser}, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert f"{stack.url}/everything/mcp:" in out.stdout and " tools" in out.stdout
    assert "echo" in out.stdout.split("echo ->")[0], "the tool list names echo"
    assert "hello from the README" in out.stdout.split("echo ->")[1]
    assert "code=" not in out.stdout + out.stderr, "the authorization code must not be printed"
