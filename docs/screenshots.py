"""Screenshots of the three ways to watch a run, taken by headless Chromium (``apt-get install chromium``):

- ``docs/img/dashboard.png``: ``evomerge dashboard RUN_DIR`` (optuna-dashboard on the run's journal);
- ``docs/img/report.png``: ``evomerge report RUN_DIR --html``.

Usage: ``python docs/screenshots.py [RUN_DIR]`` (default ``runs/zoo_demo``, what ``make demo`` writes). The
dashboard is started on a free localhost port and stopped afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("error: no Chromium found (Debian/Ubuntu: apt-get install chromium)")


def shoot(url: str, out: Path, width: int, height: int, wait_ms: int) -> None:
    """One headless Chromium screenshot of ``url`` (``wait_ms`` of virtual time lets the page's scripts run)."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--virtual-time-budget={wait_ms}",
               f"--screenshot={out}", url]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    print(f"wrote {out.relative_to(ROOT)} ({out.stat().st_size // 1024} KiB)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", default="runs/zoo_demo")
    args = ap.parse_args()
    run_dir = Path(args.run_dir).resolve()
    IMG.mkdir(parents=True, exist_ok=True)
    evomerge = [sys.executable, "-m", "evomerge.cli"]

    subprocess.run([*evomerge, "report", str(run_dir), "--html", "--out", str(IMG / "report.html")], check=True)
    shoot((IMG / "report.html").as_uri(), IMG / "report.png", 1150, 2000, 2000)
    (IMG / "report.html").unlink()

    port = free_port()
    server = subprocess.Popen([*evomerge, "dashboard", str(run_dir), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/dashboard"
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit(f"error: the dashboard did not start: {server.stderr.read().decode()[-500:]}")
                time.sleep(0.2)
        shoot(f"{url}/studies/0", IMG / "dashboard.png", 1400, 1000, 15000)
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
