"""Throughput of the GraFIQs scorer against the official-style per-image loop, in one run.

    python benchmarks/bench_scorer.py --arch iresnet50 --images 48 --batch-size 16 --record

Both sides use the same counter-hash weights and the golden crops (cycled to --images).
Reported: GFLOP per image (forward + backward to the input) and the machine's float32 and bfloat16 GEMM
GFLOP/s measured in the same run, with the scorer's fraction of the ceiling of its precision;
images/s of the per-image reference loop (grafiqs.quality.reference) under the
default allocator and again under score.py's (grafiqs/allocator.py), of the batched scorer
(score.py's allocator unless --default-allocator), their ratios, the worst relative score
difference (exact mode) or the Spearman rank correlation per group (bf16), peak RSS, start-up
time, and with --e2e the marginal seconds per image of whole `score.py` processes (start-up
cancelled by taking two image counts). --record appends a row to benchmarks/RESULTS.md.

    python benchmarks/bench_scorer.py --suite --record

--suite measures, in one process against one loop and one pair of ceilings, the modes a user chooses between:
float32 with every group (score.py's default), the same with `--channels-last`, float32 `--groups block4`, and
`--precision bf16` with every group (both layouts) where the CPU has bf16 units (AMX or AVX512-BF16; elsewhere bf16 is a slow fallback, not a speed mode), each as
img/s, ratio to the loop and fraction of its precision's ceiling (GFLOP counted on that mode's own call: the
block4 backward stops at layer4), one table row per mode (`SUITE_SECTION`). With --e2e each mode also runs as
whole score.py processes, every option spelled out, marginal per image and as a fraction of its ceiling
(`SUITE_E2E_SECTION`); `score.py --precision bf16` on a CPU is the channels_last bf16 row.
"""
from __future__ import annotations

import argparse
import datetime
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

from results import gemm_ceilings, report

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden"
GROUPS = ("image", "block1", "block2", "block3", "block4")
SECTION = "Scorer throughput against the machine's GEMM ceilings (`benchmarks/bench_scorer.py`)"
SUITE_SECTION = "Every scoring mode against this machine's ceilings (`benchmarks/bench_scorer.py --suite`)"
SUITE_E2E_SECTION = "Every scoring mode, in process and as whole score.py processes (`bench_scorer.py --suite --e2e`)"


def build_model(arch: str):
    import torch

    from grafiqs.models.hashed_weights import hashed_state_dict
    from grafiqs.models.iresnet import build_iresnet

    model = build_iresnet(arch)
    model.load_state_dict(hashed_state_dict(model, GOLDEN / "bn_stats.npz" if arch == "iresnet50" else None))
    if arch != "iresnet50":  # record running statistics on the crops, as the golden model's were
        model.train()
        with torch.no_grad():
            model(load_images(16))
    return model.eval()


def load_images(count: int):
    import torch

    from grafiqs.data.decode import normalize, read_image, to_model_tensor

    files = sorted(p for p in (GOLDEN / "images").glob("*.png"))
    tensors = [to_model_tensor(read_image(f)) for f in files]
    return normalize(torch.stack([tensors[i % len(tensors)] for i in range(count)]))


def gflop_per_image(model, image) -> float:
    """Floating-point work of one image's score: the forward counted by torch's flop counter, twice, since
    the backward to the input repeats each convolution and GEMM once (no weight gradients are computed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(image)
    return 2 * counter.get_total_flops() / 1e9


def mode_gflop(model, image, groups) -> float:
    """GFLOP of one image's score with these groups: the forward (torch's flop count) plus the backward to the
    earliest group, which repeats each convolution between it and the last BN input once (no weight gradients;
    the embedding's fc lies after every BN input and is not differentiated)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def flops(function, x):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = function(x)
        return counter.get_total_flops(), out

    total, _ = flops(model, image)
    stem, x = flops(lambda x: model.prelu(model.bn1(model.conv1(x))), image)
    stages = []
    for stage in model.stages():
        count, x = flops(stage, x)
        stages.append(count)
    earliest = min(0 if g == "image" else int(g.removeprefix("block")) for g in groups)
    return (total + (stem if earliest == 0 else 0) + sum(stages[earliest:])) / 1e9


def timed_scores(scorer, images, batch_size: int) -> tuple[dict[str, list[float]], float]:
    """(group -> scores of every image, seconds per image) of batched scoring after one warm-up batch."""
    scorer(images[:batch_size])
    started, scores = time.perf_counter(), {}
    for first in range(0, len(images), batch_size):
        for group, values in scorer(images[first:first + batch_size]).scores.items():
            scores.setdefault(group, []).extend(values.tolist())
    return scores, (time.perf_counter() - started) / len(images)


def suite(args, model, images, reference, reference_seconds) -> None:
    """--suite: every mode of MODES this CPU can run fast, against the same loop and ceilings."""
    import numpy as np
    import torch

    from grafiqs.evaluation.report import spearman
    from grafiqs.hardware import bf16_units
    from grafiqs.quality.scorer import GraFIQsScorer

    ceilings = gemm_ceilings()
    units = bf16_units(torch)
    modes = [("32", GROUPS, False), ("32", GROUPS, True), ("32", ("block4",), False)] + \
        ([("bf16", GROUPS, False), ("bf16", GROUPS, True)] if units else [])
    unique = len({tuple(r.values()) for r in reference})  # Spearman on the distinct crops only
    with weights_file(model) if args.e2e else nullcontext() as weights:  # what score.py processes load
        for precision, groups, channels_last in modes:
            scorer = GraFIQsScorer(model, groups=groups, precision=precision, channels_last=channels_last)
            scores, seconds = timed_scores(scorer, images, args.batch_size)
            gflop = mode_gflop(model, images[:1], groups)
            ceiling = ceilings["bf16" if precision == "bf16" else "fp32"]
            if precision == "32":
                fidelity = f"worst rel. diff {max(abs(scores[g][i] - reference[i][g]) / abs(reference[i][g]) for g in groups for i in range(len(images))):.1e}"
            else:
                fidelity = "min Spearman " + f"{min(spearman(np.array(scores[g][:unique]), np.array([r[g] for r in reference[:unique]])) for g in groups):.4f}"
            row = {
                "date": datetime.date.today().isoformat(), "arch": args.arch,
                "mode": f"{'bf16' if precision == 'bf16' else 'fp32'}, {'all groups' if groups == GROUPS else '--groups ' + ','.join(groups)}, bs {args.batch_size}"
                        + (", --channels-last" if channels_last else ""),
                "loop img/s": f"{1 / reference_seconds:.2f}", "img/s": f"{1 / seconds:.2f}",
                "ratio to loop": f"{reference_seconds / seconds:.2f}x", "GFLOP/image": f"{gflop:.1f}",
                "GEMM GFLOP/s fp32 / bf16": f"{ceilings['fp32']:.1f} / {ceilings['bf16']:.1f}",
                "of its ceiling": f"{gflop / seconds / ceiling:.0%}", "fidelity": fidelity,
                "bf16 units": ", ".join(units) or "none",
            }
            if args.e2e:  # whole score.py processes in this mode, marginal per image
                per_image = marginal_seconds_per_image(weights, args.arch, args,
                                                       score_py_options(precision, channels_last, False, groups))
                row |= {"score.py img/s": f"{1 / per_image:.2f}", "score.py of its ceiling": f"{gflop / per_image / ceiling:.0%}"}
            report(SUITE_E2E_SECTION if args.e2e else SUITE_SECTION, row, args.record, "bench_scorer.py", sys.argv[1:])


def score_py_options(precision: str, channels_last: bool, compiled: bool, groups=GROUPS) -> list[str]:
    """The score.py options of one mode, every choice spelled out (no auto)."""
    return (["--precision", precision, "--channels-last", "on" if channels_last else "off",
             "--compile", "on" if compiled else "off"] + ([] if groups == GROUPS else ["--groups", ",".join(groups)]))


@contextmanager
def weights_file(model):
    """The model's state dict in a temporary file, for whole score.py processes."""
    import torch

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.pth"
        torch.save(model.state_dict(), path)
        yield path


def marginal_seconds_per_image(arch_weights: Path, arch: str, args, options: list[str]) -> float:
    """Whole score.py processes with `options` on two image counts; the difference cancels start-up.

    Each count runs --e2e-repeats times and its fastest run counts: start-up, and above all a
    cached compilation (18-24 s for iresnet50), vary by seconds between processes."""
    times = []
    files = sorted((GOLDEN / "images").glob("*.png"))
    for count in (args.batch_size, args.batch_size + args.images):
        with tempfile.TemporaryDirectory() as folder:
            for i in range(count):
                shutil.copy(files[i % len(files)], Path(folder) / f"{i:05d}.png")
            command = [sys.executable, str(ROOT / "score.py"), "--image-path", folder, "--weights", str(arch_weights),
                       "--backbone", arch, "--output-dir", str(Path(folder) / "out"), "--batch-size",
                       str(args.batch_size), "--num-workers", str(args.num_workers), *options]
            runs = []
            for _ in range(args.e2e_repeats):
                shutil.rmtree(Path(folder) / "out", ignore_errors=True)  # no resume: score every image again
                started = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                runs.append(time.perf_counter() - started)
            times.append(min(runs))
    return (times[1] - times[0]) / args.images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="iresnet50")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="32", choices=["32", "bf16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the stages (score.py --compile on)")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's allocator as it is (score.py retains freed memory; see grafiqs/allocator.py)")
    parser.add_argument("--e2e", action="store_true",
                        help="also time whole score.py processes (with --suite: one pair of image counts per mode)")
    parser.add_argument("--e2e-repeats", type=int, default=2, help="processes per image count; the fastest counts")
    parser.add_argument("--suite", action="store_true",
                        help="every scoring mode in one run (float32 all groups and block4, bf16 where the CPU has bf16 "
                        "units) against one loop and one pair of ceilings")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args()

    started = time.perf_counter()
    import numpy as np
    import torch

    from grafiqs.allocator import retain_freed_memory
    from grafiqs.evaluation.report import spearman
    from grafiqs.quality.reference import reference_scores
    from grafiqs.quality.scorer import GraFIQsScorer

    imported = time.perf_counter() - started
    model = build_model(args.arch)
    built = time.perf_counter() - started - imported
    images = load_images(args.images)

    def reference_seconds_per_image() -> tuple[list[dict], float]:
        reference_scores(model, images[:1])  # warm-up
        t0 = time.perf_counter()
        scores = [reference_scores(model, images[i : i + 1]) for i in range(args.images)]
        return scores, (time.perf_counter() - t0) / args.images

    # The loop first, under the C library's default allocator, as the authors' script runs;
    # then again under the allocator setting score.py uses (retain_freed_memory), the same
    # setting for both sides of the in-process ratio.
    reference, reference_seconds = reference_seconds_per_image()
    if args.suite:
        retain_freed_memory()  # score.py's allocator setting for every mode
        return suite(args, model, images, reference, reference_seconds)
    gflop = gflop_per_image(model, images[:1])
    ceilings = gemm_ceilings()
    retained_reference_seconds = None
    if not args.default_allocator and retain_freed_memory():
        _, retained_reference_seconds = reference_seconds_per_image()

    scorer = GraFIQsScorer(model, precision=args.precision, channels_last=args.channels_last, compile=args.compile)
    warm_up = time.perf_counter()
    scorer(images[: args.batch_size])  # warm-up (and compilation, which also fills inductor's cache for --e2e)
    warm_up = time.perf_counter() - warm_up
    t0 = time.perf_counter()
    batched = {g: [] for g in GROUPS}
    for start in range(0, args.images, args.batch_size):
        result = scorer(images[start : start + args.batch_size])
        for g in GROUPS:
            batched[g] += result.scores[g].tolist()
    scorer_seconds = (time.perf_counter() - t0) / args.images
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    relative = max(
        abs(batched[g][i] - reference[i][g]) / abs(reference[i][g]) for g in GROUPS for i in range(args.images)
    )
    unique = len({tuple(r.values()) for r in reference})  # Spearman on the distinct crops only
    rho = min(spearman(np.array(batched[g][:unique]), np.array([r[g] for r in reference[:unique]])) for g in GROUPS)
    e2e = ""
    if args.e2e:
        with weights_file(model) as weights:
            per_image = marginal_seconds_per_image(
                weights, args.arch, args, score_py_options(args.precision, args.channels_last, args.compile))
        e2e = f"{1 / per_image:.2f} img/s ({reference_seconds / per_image:.2f}x)"

    row = {
        "date": datetime.date.today().isoformat(),
        "arch": args.arch,
        "mode": f"{'bf16' if args.precision == 'bf16' else 'fp32'}, bs {args.batch_size}"
        + (", channels_last" if args.channels_last else "") + (", compiled" if args.compile else "")
        + (", default allocator" if args.default_allocator else ""),
        "reference img/s": f"{1 / reference_seconds:.2f}",
        "scorer img/s": f"{1 / scorer_seconds:.2f}",
        "ratio": f"{reference_seconds / scorer_seconds:.2f}x",
        "reference img/s, retained heap": f"{1 / retained_reference_seconds:.2f}" if retained_reference_seconds else "-",
        "ratio, both retained": f"{retained_reference_seconds / scorer_seconds:.2f}x" if retained_reference_seconds else "-",
        "score.py marginal": e2e or "-",
        "GFLOP/image": f"{gflop:.1f}",
        "GEMM GFLOP/s fp32 / bf16": f"{ceilings['fp32']:.1f} / {ceilings['bf16']:.1f}",
        "scorer of its ceiling": f"{gflop / scorer_seconds / ceilings['bf16' if args.precision == 'bf16' else 'fp32']:.0%}",
        "worst rel. diff": f"{relative:.1e}",
        "min Spearman": f"{rho:.4f}",
        "peak RSS": f"{peak_rss_mb:.0f} MB",
        "start-up": f"import {imported:.1f} s, build {built:.1f} s" + (f", compile {warm_up:.0f} s" if args.compile else ""),
    }
    report(SECTION, row, args.record, "bench_scorer.py", sys.argv[1:])


if __name__ == "__main__":
    main()
