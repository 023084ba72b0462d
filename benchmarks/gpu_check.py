"""The GPU check: iresnet100 GraFIQs throughput, fidelity and memory on a CUDA device, in one run of a few minutes.

    bash benchmarks/gpu_check.sh            # = python benchmarks/gpu_check.py --record (needs only `make setup`)
    python benchmarks/gpu_check.py --device cpu --arch iresnet18 --images 8 --batch-sizes 4 --no-compile   # dry run

Rows: the official-style per-image loop (grafiqs.quality.reference), then the engine score.py runs
(GraFIQsScorer) in float32 and bf16 autocast at each batch size, eager and compiled. Each row: images/s,
ratio to the loop, peak device memory, worst relative difference and the smallest Spearman correlation per
group against float32 eager on the same images, and the fraction of the device's own bf16 / float32 GEMM
rate measured in the same run (8192^3 products: what its tensor cores reach, the ceiling a score can approach).
Weights: the counter-hash iResNet (grafiqs.models.hashed_weights) with BN statistics recorded on the golden crops.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time

from bench_scorer import GROUPS, build_model, gflop_per_image, load_images
from results import report

SECTION = "GPU check (`benchmarks/gpu_check.py`)"


def device_gemm_tflops(torch, device: str, dtype, size: int) -> float:
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    a @ b
    synchronise(torch, device)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        synchronise(torch, device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


def synchronise(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="iresnet100")
    parser.add_argument("--images", type=int, default=512, help="images per batched row (the loop scores 64)")
    parser.add_argument("--loop-images", type=int, default=64)
    parser.add_argument("--batch-sizes", default="64,128,256")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    parser.add_argument("--gemm-size", type=int, default=8192)
    parser.add_argument("--record", action="store_true", help="append the rows to benchmarks/RESULTS.md")
    args = parser.parse_args()

    import numpy as np
    import torch

    from grafiqs.evaluation.report import spearman
    from grafiqs.quality.reference import reference_scores
    from grafiqs.quality.scorer import GraFIQsScorer

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: no CUDA device here; run with --device cpu for a dry run")
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    model = build_model(args.arch).to(device)
    images = load_images(args.images).to(device)
    gflop = gflop_per_image(model.cpu(), images[:1].cpu())
    model.to(device)
    ceilings = {p: device_gemm_tflops(torch, device, dtype, args.gemm_size)
                for p, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print(f"{name}: GEMM {ceilings['fp32']:.1f} TFLOP/s float32, {ceilings['bf16']:.1f} bf16; "
          f"{gflop:.1f} GFLOP per image", flush=True)

    reference_scores(model, images[:1])
    synchronise(torch, device)
    start = time.perf_counter()
    for i in range(args.loop_images):
        reference_scores(model, images[i:i + 1])
    loop_seconds = (time.perf_counter() - start) / args.loop_images

    def measure(precision: str, batch_size: int, compiled: bool):
        scorer = GraFIQsScorer(model, precision=precision, compile=compiled)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)
        warm = time.perf_counter()
        scorer(images[:batch_size])  # warm-up, compilation included
        synchronise(torch, device)
        warm = time.perf_counter() - warm
        scores = {g: [] for g in GROUPS}
        start = time.perf_counter()
        for first in range(0, args.images - batch_size + 1, batch_size):
            result = scorer(images[first:first + batch_size])
            for g in GROUPS:
                scores[g].append(result.scores[g].float().cpu())
        synchronise(torch, device)
        done = args.images // batch_size * batch_size
        seconds = (time.perf_counter() - start) / done
        memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.startswith("cuda") else float("nan")
        return {g: torch.cat(v).numpy() for g, v in scores.items()}, seconds, memory, warm

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    baseline, *_ = measure("32", batch_sizes[0], False)
    for precision in ("32", "bf16"):
        for compiled in (False,) if args.no_compile else (False, True):
            for batch_size in batch_sizes if not compiled else batch_sizes[1:2] or batch_sizes:
                scores, seconds, memory, warm = measure(precision, batch_size, compiled)
                n = min(len(scores["image"]), len(baseline["image"]))
                relative = max(float(np.max(np.abs(scores[g][:n] - baseline[g][:n]) / np.abs(baseline[g][:n])))
                               for g in GROUPS)
                unique = 14  # the golden crops repeat: rank only distinct images
                rho = min(spearman(scores[g][:unique], baseline[g][:unique]) for g in GROUPS)
                row = {
                    "date": datetime.date.today().isoformat(), "device": name, "arch": args.arch,
                    "mode": f"{'bf16' if precision == 'bf16' else 'fp32'}, bs {batch_size}"
                            + (f", compiled ({warm:.0f} s)" if compiled else ", eager"),
                    "loop img/s": f"{1 / loop_seconds:.1f}", "img/s": f"{1 / seconds:.1f}",
                    "vs loop": f"{loop_seconds / seconds:.1f}x", "peak memory": f"{memory:.1f} GiB",
                    "of GEMM rate": f"{gflop / seconds / 1e3 / ceilings['bf16' if precision == 'bf16' else 'fp32']:.0%}",
                    "GEMM TFLOP/s fp32 / bf16": f"{ceilings['fp32']:.0f} / {ceilings['bf16']:.0f}",
                    "worst rel. diff vs fp32": f"{relative:.1e}", "min Spearman": f"{rho:.4f}",
                }
                report(SECTION, row, args.record, "gpu_check.py", sys.argv[1:])
                print(flush=True)


if __name__ == "__main__":
    main()
