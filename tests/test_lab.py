"""`make lab` as a user sees it (issue 23): JupyterLab, started headless on a free local port with a token,
serves notebook 01 and headless Chromium renders it with its title cell. Slow (a server and a browser start):
run with `make lab-check`, or `pytest --runslow tests/test_lab.py`. Skips when JupyterLab or Chromium is absent
(`make lab` installs the first; `apt-get install chromium` the second)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "01_pesq_failure_audit.ipynb"
TITLE = "01 · PESQ failure audit"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    """Until the server answers `url` with 200; fails with the server's exit when it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"jupyter lab exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"jupyter lab did not answer {url.split('?')[0]} within {timeout:.0f} s")


def _chromium(browser: str, url: str, *args: str, budget_ms: int = 25000) -> str:
    """Headless Chromium on `url` with a virtual-time budget (the page's scripts run that long, then the DOM is
    dumped or the screenshot taken); a throwaway profile, so nothing of the user's browser is touched."""
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"cmgan-lab-check-{os.getpid()}"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={profile}", "--window-size=1400,1000", f"--virtual-time-budget={budget_ms}",
           *args, url]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_ms / 1000 + 90)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return done.stdout


@pytest.mark.slow
def test_jupyterlab_opens_notebook_01_with_its_title(tmp_path):
    jupyter = Path(sys.executable).parent / "jupyter-lab"
    if not jupyter.is_file():
        pytest.skip("JupyterLab is not installed in this environment: `make lab` installs it")
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium: `apt-get install chromium`")
    t0 = time.perf_counter()
    port, token = _free_port(), os.urandom(16).hex()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}  # fmt: skip
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')  # no news pop-up, no request leaving the machine
    cmd = [str(jupyter), "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT / 'notebooks'}",
           "--allow-root"]  # fmt: skip
    before = (ROOT / "notebooks" / NOTEBOOK).read_bytes()
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(f"{base}/api/status?token={token}", server)
        url = f"{base}/lab/tree/{NOTEBOOK}?token={token}"
        dom = _chromium(browser, url, "--dump-dom")
        shot = Path(os.environ.get("LAB_SCREENSHOT", tmp_path / "lab.png"))
        _chromium(browser, url, f"--screenshot={shot}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    seconds = time.perf_counter() - t0
    assert "jp-Notebook" in dom, "JupyterLab did not open a notebook panel"
    assert TITLE in dom, f"the title cell of {NOTEBOOK} is not rendered"
    assert "jp-MarkdownOutput" in dom and "<h1" in dom, "the title is not a rendered markdown heading"
    assert shot.is_file() and shot.stat().st_size > 10_000, "no screenshot"
    assert (ROOT / "notebooks" / NOTEBOOK).read_bytes() == before, "opening the notebook changed it on disk"
    print(f"browser check: {seconds:.1f} s; screenshot {shot}")
