"""Start time of the app: seconds from `python app.py` to the first page served, for consecutive starts.

    python benchmarks/app_start.py [--app app.py] [--model checkpoints/demo] [--starts 2] [-- extra app.py flags]

The first start on a fresh machine converts the model; later ones read the converted model from the cache (see
modeling/backends.py), so run it once with an empty cache (`--fresh_cache`) for the "first start" figure.
Prints each start's seconds and the 1-minute load average before it (another job on the machine slows imports).
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_start(app: Path, model: str, extra: list[str], env: dict, timeout_s: float = 600) -> float:
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", prefix="app-start-", suffix=".log", delete=False)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(app), "--model", model, "--port", str(port), *extra],
                            cwd=app.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while time.perf_counter() - start < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"app.py did not serve within {timeout_s} s; see {log.name}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app", type=Path, default=ROOT / "app.py")
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "demo"))
    parser.add_argument("--starts", type=int, default=2)
    parser.add_argument("--fresh_cache", action="store_true",
                        help="start with an empty model cache (a temporary MODEL_CACHE_DIR)")
    parser.add_argument("extra", nargs="*", help="more app.py flags (after --)")
    args = parser.parse_args()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    cache = None
    if args.fresh_cache:
        cache = tempfile.mkdtemp(prefix="model-cache-")
        env["MODEL_CACHE_DIR"] = cache
    try:
        for i in range(args.starts):
            load = os.getloadavg()[0]
            seconds = time_start(args.app.resolve(), args.model, args.extra, env)
            print(f"start {i + 1}: {seconds:.1f} s to the first page (load average before: {load:.2f})", flush=True)
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
