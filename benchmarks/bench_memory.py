"""Peak memory of whole `score.py` runs against the number of images: it must stay flat.

    python benchmarks/bench_memory.py --counts 1000 10000 --record

Writes N copies of a few synthetic crops into a temporary folder, scores each folder with the
bundled demo model in a fresh `score.py` process and reports the process's peak RSS (ru_maxrss
of the finished child) and its wall time. Only per-image scores are kept in memory; results go
to disk per batch, so the peak should not grow with N beyond the path list and final files.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import add_row, machine

ROOT = Path(__file__).resolve().parents[1]


def make_folder(folder: Path, count: int) -> None:
    import cv2

    from grafiqs.synthetic import render

    folder.mkdir(parents=True, exist_ok=True)
    seeds = [cv2.imencode(".png", render(0, 7_000_000 + i, 0))[1].tobytes() for i in range(16)]
    for i in range(count):
        (folder / f"face_{i:06d}.png").write_bytes(seeds[i % len(seeds)])


def run_child(folder: Path, out: Path, batch_size: int, workers: int, compile_mode: str) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one score.py process."""
    from grafiqs.experiments.demo import DEMO_WEIGHTS

    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "score.py"), "--image-path", str(folder), "--output-dir", str(out),
         "--weights", str(DEMO_WEIGHTS), "--batch-size", str(batch_size), "--num-workers", str(workers),
         "--compile", compile_mode],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ | {"NO_ALBUMENTATIONS_UPDATE": "1"},
    )
    _, status, usage = os.wait4(child.pid, 0)  # this child's own usage (its largest process, workers included)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"score.py failed with exit code {child.returncode}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--compile", default="off", choices=["auto", "on", "off"],
                        help="score.py --compile; off by default so that every count runs the same code path")
    parser.add_argument("--record", action="store_true", help="append the rows to benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.counts:
            folder = Path(tmp) / f"n{count}"
            make_folder(folder, count)
            peak, seconds = run_child(folder, Path(tmp) / f"out{count}", args.batch_size, args.num_workers, args.compile)
            shutil.rmtree(folder)
            print(f"{count} images: peak RSS {peak:.0f} MB, {seconds:.0f} s ({count / seconds:.0f} images/s)")
            rows.append((count, peak, seconds))
    if args.record:
        command = "python benchmarks/bench_memory.py " + " ".join(sys.argv[1:])
        for count, peak, seconds in rows:
            add_row("Peak memory of whole score.py runs (`benchmarks/bench_memory.py`)",
                    ["date", "run", "peak RSS", "wall time", "command", "machine"],
                    [str(datetime.date.today()), f"demo model, {count} images, bs {args.batch_size}, --compile {args.compile}",
                     f"{peak:.0f} MB", f"{seconds:.0f} s", f"`{command}`", machine()])


if __name__ == "__main__":
    main()
