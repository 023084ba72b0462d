"""Scoring straight from a RecordIO set against the same images as a folder, and memory against the set's size.

    python benchmarks/bench_recordio_scoring.py --throughput 1000 --counts 1000 20000 --record

1. Throughput: N synthetic faces packed with write_recordio (JPEG 95, as insightface's sets) and the very same
   JPEG bytes written as N files; each scored by a fresh `score.py` process with the bundled demo model, the two
   kinds alternating (`--repeats` rounds, best of each, to see through other load on a shared machine). The rate
   is score.py's own "scored N of N images in S s" (weights loaded, Lightning started, images decoded in one
   DataLoader worker, files written), so both inputs pay the same start-up; score.py's aligned-face check is
   switched off (`--no-face-check`), as it costs the same per image for both and is not what is compared.
2. Memory: peak RSS of whole score.py processes on RecordIO sets of `--counts` records with a tiny iResNet
   (the network's size does not change what grows with the set; the tiny one keeps 20,000 records to a minute),
   `--groups block4`. The records are streamed: what grows with the set is the per-image bookkeeping (names,
   file identities, the results read back for the final files), the same as for a folder of image files.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import add_row, machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def faces(count: int) -> list[tuple[bytes, int]]:
    """`count` (JPEG bytes, label) samples: 16 rendered faces repeated, 8 images per label."""
    import cv2

    from grafiqs.synthetic import render

    seeds = [cv2.imencode(".jpg", render(0, 7_000_000 + i, 0), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
             for i in range(16)]
    return [(seeds[i % len(seeds)], i // 8) for i in range(count)]


def tiny_weights(path: Path) -> Path:
    import torch

    from grafiqs.models.iresnet import IResNet

    torch.manual_seed(0)
    model = IResNet((1, 1, 1, 1), num_features=32, widths=(8, 16, 32, 64)).train()
    with torch.no_grad():
        for _ in range(3):  # BN running statistics of noise images: GraFIQs needs recorded statistics
            model(torch.rand(8, 3, 112, 112) * 2 - 1)
    torch.save(model.eval().state_dict(), path)
    return path


def run_score(image_path: Path, out: Path, weights: Path, *extra: str) -> tuple[float, float, float]:
    """(score.py's own seconds, whole process seconds, peak RSS MB) of one fresh score.py process."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "score.py"), "--image-path", str(image_path), "--output-dir", str(out),
         "--weights", str(weights), "--compile", "off", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=os.environ | {"NO_ALBUMENTATIONS_UPDATE": "1"})
    stdout = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"score.py failed ({os.waitstatus_to_exitcode(status)}): {stdout[-2000:]}")
    found = re.search(r"scored (\d+) of (\d+) images in ([0-9.]+) s", stdout)
    return float(found.group(3)), time.perf_counter() - started, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--throughput", type=int, default=1000, help="images of the throughput comparison")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the throughput comparison (best of each)")
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 20000], help="records of the memory runs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--record", action="store_true", help="append the rows to benchmarks/RESULTS.md")
    args = parser.parse_args()

    from grafiqs.data.recordio import write_recordio
    from grafiqs.experiments.demo import DEMO_WEIGHTS

    options = ["--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers)]
    helped = subprocess.run([sys.executable, str(ROOT / "score.py"), "--help"], capture_output=True, text=True).stdout
    if "--no-face-check" in helped:  # the aligned-face check costs the same per image for both inputs: leave it out
        options.append("--no-face-check")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        samples = faces(args.throughput)
        write_recordio(tmp / "set", samples)
        folder = tmp / "files"
        folder.mkdir()
        for i, (data, _) in enumerate(samples):
            (folder / f"{i + 1:06d}.jpg").write_bytes(data)
        best = {"RecordIO": [], "folder": []}
        for round_ in range(args.repeats):
            for kind, path in (("RecordIO", tmp / "set"), ("folder", folder)):
                seconds, whole, peak = run_score(path, tmp / f"out_{kind}_{round_}", DEMO_WEIGHTS, *options)
                best[kind].append(seconds)
                print(f"{kind}: {args.throughput} images in {seconds:.1f} s ({args.throughput / seconds:.1f} img/s; "
                      f"process {whole:.1f} s, peak RSS {peak:.0f} MB)", flush=True)
        rates = {kind: args.throughput / min(values) for kind, values in best.items()}
        print(f"RecordIO / folder: {rates['RecordIO'] / rates['folder']:.3f}")
        rows.append(("throughput", f"demo model, {args.throughput} images, all groups, bs {args.batch_size}, "
                     f"{args.num_workers} worker, best of {args.repeats}"
                     + (", --no-face-check" if "--no-face-check" in options else ""),
                     f"RecordIO {rates['RecordIO']:.1f} img/s, folder {rates['folder']:.1f} img/s "
                     f"(ratio {rates['RecordIO'] / rates['folder']:.3f})"))

        weights = tiny_weights(tmp / "tiny.pth")
        peaks = {}
        for count in args.counts:
            write_recordio(tmp / f"n{count}", faces(count))
            seconds, whole, peak = run_score(tmp / f"n{count}", tmp / f"out{count}", weights, "--groups", "block4",
                                             *options)
            peaks[count] = peak
            print(f"{count} records: peak RSS {peak:.0f} MB, {count / seconds:.0f} img/s (process {whole:.0f} s)",
                  flush=True)
        low, high = min(args.counts), max(args.counts)
        growth = (peaks[high] - peaks[low]) * 2**20 / (high - low)
        print(f"peak RSS {peaks[low]:.0f} MB at {low} records, {peaks[high]:.0f} MB at {high}: "
              f"{growth:.0f} bytes per extra record")
        rows.append(("memory", f"tiny iResNet, --groups block4, {' vs '.join(map(str, args.counts))} records, "
                     f"bs {args.batch_size}", ", ".join(f"{c}: {p:.0f} MB" for c, p in peaks.items())
                     + f" ({growth:.0f} B per extra record)"))
    if args.record:
        command = "python benchmarks/bench_recordio_scoring.py " + " ".join(sys.argv[1:])
        for what, run, result in rows:
            add_row("Scoring from RecordIO (`benchmarks/bench_recordio_scoring.py`)",
                    ["date", "what", "run", "result", "command", "machine"],
                    [str(datetime.date.today()), what, run, result, f"`{command}`", machine()])


if __name__ == "__main__":
    main()
