"""The app under load: 200 requests from 8 concurrent gradio_client clients on loopback, good and bad files mixed.

    python benchmarks/app_load.py [--model DIR_OR_HUB_ID] [--requests 200] [--clients 8]

Starts `python app.py` in a subprocess (default model: a random convnextv2_atto at 256 px, what the app serves
without a trained model), then checks every answer: each good file gets the label the same model gives it
in-process, each bad file the app's clear error. Prints requests/s, p50/p95 latency, the server's peak RSS, and
its RSS after 50 and after all requests (bounded memory: within 10%). Exits non-zero when a check fails.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
from modeling import build_detector, save_detector  # noqa: E402
from modeling.imageio import read_image  # noqa: E402
from modeling.inference import Detector  # noqa: E402


@dataclass
class Case:
    path: Path
    label: str | None = None  # expected label for a good file
    fake_probability: float | None = None
    error: str | None = None  # expected fragment of the error message for a bad file


def make_cases(folder: Path, detector: Detector) -> list[Case]:
    """Good files of several formats and sizes, and one of each kind of bad file."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    good = []
    for i, (w, h, fmt) in enumerate([(640, 480, "JPEG"), (320, 320, "PNG"), (1024, 768, "JPEG"), (300, 500, "WEBP"),
                                     (2000, 1500, "JPEG"), (256, 256, "PNG")]):
        smooth = Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        noisy = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        path = folder / f"good_{i}.{fmt.lower()}"
        (smooth if i % 2 else noisy).save(path, fmt)
        good.append(path)
    good += sorted((ROOT / "examples").glob("*.jpg"))
    cases = []
    for path in good:
        prediction = detector.predict(read_image(path))
        cases.append(Case(path, prediction.label, prediction.fake_probability))
    bad = {
        "text.jpg": (b"not an image\n" * 100, "not an image"),
        "truncated.jpg": (good[0].read_bytes()[:5000], "truncated or corrupt"),
        "empty.png": (b"", "empty"),
        "huge_pixels.png": (None, "megapixels"),
    }
    for name, (data, error) in bad.items():
        path = folder / name
        if data is None:
            Image.new("1", (5000, 4000)).save(path)
        else:
            path.write_bytes(data)
        cases.append(Case(path, error=error))
    return cases


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, log_path: Path, timeout_s: float = 600) -> subprocess.Popen:
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", model, "--port", str(port),
                             "--host", "127.0.0.1"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=log_path.parent)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"app.py did not start within {timeout_s} s; see {log_path}")


def server_rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of the server process and its children, in MB."""
    proc = psutil.Process(pid)
    procs = [proc] + proc.children(recursive=True)
    rss = sum(p.memory_info().rss for p in procs)
    try:
        peak = sum(int(line.split()[1]) * 1024 for p in procs for line in open(f"/proc/{p.pid}/status")
                   if line.startswith("VmHWM:"))
    except OSError:  # not Linux: the sampled current RSS is the best we have
        peak = rss
    return rss / 2**20, peak / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: random convnextv2_atto)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=50, help="RSS is compared after this many and after all")
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    tmp = Path(tempfile.mkdtemp(prefix="app-load-"))
    model = args.model
    if model is None:
        model = str(save_detector(build_detector("convnextv2_atto", pretrained=False, image_size=256), tmp / "model"))
    detector = Detector.from_pretrained(model)  # the labels the server must give
    cases = make_cases(tmp / "files", detector)
    order = [cases[i % len(cases)] for i in np.random.default_rng(1).permutation(args.requests)]
    port = free_port()
    started = time.perf_counter()
    server = start_server(model, port, tmp / "server.log")
    print(f"server up in {time.perf_counter() - started:.1f} s (pid {server.pid}); {len(cases)} distinct files "
          f"({sum(c.error is None for c in cases)} good, {sum(c.error is not None for c in cases)} bad); "
          f"{args.requests} requests from {args.clients} clients")

    local = threading.local()
    done_lock = threading.Lock()
    done = {"n": 0, "rss": {}}  # RSS after every 50 requests

    def call(case: Case):
        if not hasattr(local, "client"):
            local.client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        start = time.perf_counter()
        try:
            result, failure = local.client.predict(handle_file(str(case.path)), api_name="/predict"), None
        except Exception as e:  # noqa: BLE001 - the check below decides whether this error was the right one
            result, failure = None, e
        seconds = time.perf_counter() - start
        with done_lock:
            done["n"] += 1
            if done["n"] % 50 == 0 or done["n"] == args.warmup:
                done["rss"][done["n"]] = server_rss_mb(server.pid)[0]
        return case, result, failure, seconds

    try:
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            outcomes = list(pool.map(call, order))
        wall = time.perf_counter() - t0
        rss_end, peak = server_rss_mb(server.pid)
        alive = server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)

    problems = []
    for case, result, failure, _ in outcomes:
        if case.error is None:
            if failure is not None:
                problems.append(f"{case.path.name}: unexpected error {failure}")
            elif result["label"] != case.label or abs(result["fake_probability"] - case.fake_probability) > 1e-4:
                problems.append(f"{case.path.name}: got {result['label']} {result['fake_probability']:.5f}, "
                                f"expected {case.label} {case.fake_probability:.5f}")
        elif failure is None or type(failure).__name__ != "AppError" or case.error not in str(failure):
            problems.append(f"{case.path.name}: expected an error containing {case.error!r}, got {failure or result!r}")
    latencies = np.array([o[3] for o in outcomes]) * 1000
    n_good = sum(o[0].error is None for o in outcomes)
    rss_warm = done["rss"][args.warmup]
    growth = rss_end / rss_warm - 1
    print(f"answered: {n_good} good requests, {len(outcomes) - n_good} bad; wrong answers or unclear errors: "
          f"{len(problems)}; server alive after the run: {alive}")
    print(f"throughput: {len(outcomes) / wall:.2f} requests/s ({wall:.1f} s wall)")
    print(f"latency: p50 {np.percentile(latencies, 50):.0f} ms, p95 {np.percentile(latencies, 95):.0f} ms, "
          f"max {latencies.max():.0f} ms (includes queueing behind the other {args.clients - 1} clients)")
    print(f"server RSS: peak {peak:.0f} MB (VmHWM); after {args.warmup} requests {rss_warm:.0f} MB, "
          f"after {len(outcomes)} {rss_end:.0f} MB ({growth:+.1%}; bound: within 10%)")
    print("server RSS every 50 requests (MB): " + ", ".join(f"{n}: {v:.0f}" for n, v in sorted(done["rss"].items())))
    for line in problems[:20]:
        print("  PROBLEM", line)
    ok = not problems and alive and abs(growth) <= 0.10
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
