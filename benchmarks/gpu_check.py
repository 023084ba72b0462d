"""The GPU check: iresnet100 GraFIQs throughput, fidelity and memory on a CUDA device, in one run of a few minutes.

    bash benchmarks/gpu_check.sh            # = python benchmarks/gpu_check.py --record (needs only `make setup`)
    python benchmarks/gpu_check.py --device cpu --arch iresnet18 --images 8 --loop-images 4 --batch-sizes 4 --gemm-size 1024 --no-compile   # dry run

Rows: the official-style per-image loop (grafiqs.quality.reference) in IEEE float32, then the engine score.py
runs (GraFIQsScorer) in float32 and bf16 autocast, in both memory layouts at each batch size, eager, and each
precision compiled once in its faster layout. Each row: images/s, ratio to the loop, peak device memory, the
worst relative difference per group against the loop's scores (printed by group, the BN loss too) and the smallest Spearman correlation per group
against float32 eager on the same images, the fraction of the device's own bf16 / float32 GEMM rate measured
in the same run (8192^3 products: what its tensor cores reach, the ceiling a score can approach), and how far
the loop moves when torch's default convolutions (TF32 on Ampere and newer GPUs) replace IEEE float32.
Weights: the counter-hash iResNet (grafiqs.models.hashed_weights) with BN statistics recorded on the golden crops.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time

from bench_scorer import GOLDEN, GROUPS, build_model, gflop_per_image, load_images
from results import report

SECTION = "GPU check (`benchmarks/gpu_check.py`)"
# the loss too: if it agrees where a gradient does not, the statistics are right and the backward is not
COMPARED = (*GROUPS, "bns_loss")


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
    from grafiqs.quality.groups import ieee_float32_convolutions
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

    def loop(count: int):
        """The per-image reference: seconds per image and its scores per group."""
        reference_scores(model, images[:1])
        synchronise(torch, device)
        start = time.perf_counter()
        scores = [reference_scores(model, images[i % len(images)].unsqueeze(0)) for i in range(count)]
        synchronise(torch, device)
        return (time.perf_counter() - start) / count, {g: np.array([s[g] for s in scores]) for g in COMPARED}

    def relative_by_group(scores, reference) -> dict[str, np.ndarray]:
        n = min(len(scores["image"]), len(reference["image"]))
        return {g: np.abs(scores[g][:n] - reference[g][:n]) / np.abs(reference[g][:n]) for g in COMPARED}

    def worst(relative: dict[str, np.ndarray]) -> float:
        return max(float(np.max(r)) for r in relative.values())

    with ieee_float32_convolutions():
        loop_seconds, loop_scores = loop(args.loop_images)
    tf32_seconds, tf32_scores = loop(args.loop_images)  # torch's default on this device (TF32 where cuDNN has it)
    tf32_differs = f"{worst(relative_by_group(tf32_scores, loop_scores)):.1e}"
    print(f"per-image loop: {1 / loop_seconds:.1f} img/s IEEE float32; torch's default convolutions "
          f"(TF32 on Ampere and newer): {1 / tf32_seconds:.1f} img/s, worst rel. diff {tf32_differs}", flush=True)

    def measure(precision: str, batch_size: int, channels_last: bool, compiled: bool):
        scorer = GraFIQsScorer(model, precision=precision, channels_last=channels_last, compile=compiled)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)
        warm = time.perf_counter()
        scorer(images[:batch_size])  # warm-up, compilation included
        synchronise(torch, device)
        warm = time.perf_counter() - warm
        scores = {g: [] for g in COMPARED}
        start = time.perf_counter()
        for first in range(0, args.images - batch_size + 1, batch_size):
            result = scorer(images[first:first + batch_size])
            for g in COMPARED:
                scores[g].append((result.bns_loss if g == "bns_loss" else result.scores[g]).float().cpu())
        synchronise(torch, device)
        done = args.images // batch_size * batch_size
        seconds = (time.perf_counter() - start) / done
        memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.startswith("cuda") else float("nan")
        return {g: torch.cat(v).numpy() for g, v in scores.items()}, seconds, memory, warm

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    compiled_batch = batch_sizes[1] if len(batch_sizes) > 1 else batch_sizes[0]
    unique = min(args.images, len(list((GOLDEN / "images").glob("*.png"))))  # the crops repeat: rank distinct ones
    eager_rate, baseline = {}, {}  # baseline: the first row's scores, float32 eager in the default layout

    def row(precision: str, batch_size: int, channels_last: bool, compiled: bool) -> None:
        scores, seconds, memory, warm = measure(precision, batch_size, channels_last, compiled)
        if not compiled:
            eager_rate[precision, batch_size, channels_last] = 1 / seconds
        baseline.update(baseline or scores)
        rho = min(spearman(scores[g][:unique], baseline[g][:unique]) for g in GROUPS)
        ceiling = ceilings["bf16" if precision == "bf16" else "fp32"]
        relative = relative_by_group(scores, loop_scores)
        print("rel. diff vs loop by group (worst / median): " + ", ".join(
            f"{g} {np.max(r):.1e} / {np.median(r):.1e}" for g, r in relative.items()))
        report(SECTION, {
            "date": datetime.date.today().isoformat(), "device": name, "arch": args.arch,
            "mode": f"{'bf16' if precision == 'bf16' else 'fp32'}, bs {batch_size}"
                    + (", channels_last" if channels_last else "")
                    + (f", compiled ({warm:.0f} s)" if compiled else ", eager"),
            "loop img/s": f"{1 / loop_seconds:.1f}", "img/s": f"{1 / seconds:.1f}",
            "vs loop": f"{loop_seconds / seconds:.1f}x", "peak memory": f"{memory:.1f} GiB",
            "of GEMM rate": f"{gflop / seconds / 1e3 / ceiling:.0%}",
            "GEMM TFLOP/s fp32 / bf16": f"{ceilings['fp32']:.0f} / {ceilings['bf16']:.0f}",
            "worst rel. diff vs loop": f"{worst(relative):.1e}",
            "min Spearman vs fp32": f"{rho:.4f}", "loop with TF32: rel. diff": tf32_differs,
        }, args.record, "gpu_check.py", sys.argv[1:])
        print(flush=True)

    for precision in ("32", "bf16"):
        for channels_last in (False, True):
            for batch_size in batch_sizes:
                row(precision, batch_size, channels_last, False)
    if not args.no_compile:  # compile each precision once, in its faster eager layout
        for precision in ("32", "bf16"):
            faster = max((False, True), key=lambda layout: eager_rate[precision, compiled_batch, layout])
            row(precision, compiled_batch, faster, True)

if __name__ == "__main__":
    main()
