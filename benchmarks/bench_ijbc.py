"""Times the IJB-C 1:1 protocol at IJB-C's size on a synthetic protocol, from text files to pAUC.

    python benchmarks/bench_ijbc.py [--images 469375] [--templates 23124] [--pairs 15658489]
                                    [--dir /tmp/ijbc_bench] [--record]

Writes a random protocol of IJB-C's layout (grafiqs.data.ijbc.synthetic_ijbc; ~300 MB at full
size, so keep --dir on a scratch disk), then times: reading both files into an IJBCProtocol;
aggregating random 512-d image embeddings into templates; the cosine of every template pair;
template and pair quality for three per-image quality rows (random higher-is-better, random
lower-is-better magnitudes, and coarse values with many ties); and the ISO EDC with pAUC at
discard 0.2 and 0.3 for those rows at FMR 1e-3 and 1e-4 (thresholds fixed once per FMR).
Then the benchmark runner's evaluation (grafiqs.experiments.benchmark_report.evaluate) with every
row of configs/benchmark/synthetic.yaml (4 baselines, the 5 official GraFIQs rows in both readings,
the BNS loss, one score file: 16 rows plus the random reference) on the same protocol, judged by one
FR model, CR-FIQA ERC column included: what a benchmark spends on IJB-C after its passes.
Peak RSS is the process's maximum resident memory (getrusage).
"""
from __future__ import annotations

import argparse
import datetime
import resource
import sys
import time

import numpy as np
from results import report

from grafiqs.data.ijbc import load_ijbc_protocol, synthetic_ijbc
from grafiqs.evaluation.edc import edc_for_order, threshold_at_fmr

FMRS = (1e-3, 1e-4)
LIMITS = (0.2, 0.3)


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=469_375)
    parser.add_argument("--templates", type=int, default=23_124)
    parser.add_argument("--pairs", type=int, default=15_658_489)
    parser.add_argument("--dir", default="/tmp/ijbc_bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", action="store_true", help="append the row to benchmarks/RESULTS.md")
    args = parser.parse_args()

    write_s, _ = timed(lambda: synthetic_ijbc(args.dir, args.images, args.templates, args.pairs, args.seed))
    print(f"wrote the synthetic protocol in {write_s:.1f} s")
    read_s, protocol = timed(lambda: load_ijbc_protocol(args.dir))
    rng = np.random.default_rng(args.seed)
    embeddings = rng.standard_normal((protocol.num_images, 512), dtype=np.float32)
    aggregate_s, (_, templates) = timed(lambda: protocol.template_embeddings(embeddings))
    del embeddings
    similarity_s, similarity = timed(lambda: protocol.pair_similarity(templates))

    rows = {
        "random, higher is better": (rng.random(protocol.num_images), "higher_is_better"),
        "random magnitude, lower is better": (rng.exponential(size=protocol.num_images), "lower_is_better"),
        "10 levels (ties)": (rng.integers(0, 10, protocol.num_images).astype(np.float64), "higher_is_better"),
    }
    quality_s, pair_qualities = timed(lambda: {name: protocol.pair_quality(protocol.template_quality(values, orientation))
                                               for name, (values, orientation) in rows.items()})

    def evaluate():
        thresholds = {fmr: threshold_at_fmr(similarity, protocol.labels, fmr) for fmr in FMRS}
        return {(name, fmr): [edc_for_order(similarity, protocol.labels, q, t).pauc(limit) for limit in LIMITS]
                for name, q in pair_qualities.items() for fmr, t in thresholds.items()}

    edc_s, paucs = timed(evaluate)
    for (name, fmr), values in paucs.items():
        print(f"  {name}, FMR {fmr:g}: " + ", ".join(f"pAUC@{p.limit:g} norm {p.normalised:.3f}" for p in values))
    del similarity, pair_qualities
    runner_s, records = timed(lambda: runner_evaluation(protocol, rng))
    print(f"runner evaluation: {len(records)} records in {runner_s:.1f} s")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux

    report("IJB-C-sized protocol, every row of the benchmark runner", {
        "date": datetime.date.today().isoformat(),
        "protocol": f"{protocol.num_images:,} images, {len(protocol.templates):,} templates, "
                    f"{len(protocol.labels):,} pairs ({int(protocol.labels.sum()):,} genuine)",
        "read both files": f"{read_s:.1f} s",
        "template aggregation (512-d)": f"{aggregate_s:.1f} s",
        "pair similarity": f"{similarity_s:.1f} s",
        "pair quality, 3 rows": f"{quality_s:.1f} s",
        "EDC + pAUC, 3 rows x 2 FMRs": f"{edc_s:.1f} s",
        "runner evaluation, 17 rows x 2 FMRs + ERC": f"{runner_s:.1f} s",
        "peak RSS": f"{peak_gb:.2f} GB",
    }, args.record, "bench_ijbc.py", sys.argv[1:])


def runner_evaluation(protocol, rng) -> list[dict]:
    """benchmark_report.evaluate on the protocol with random embeddings and the synthetic config's rows."""
    from grafiqs.data.ijbc import TemplatePairSet
    from grafiqs.experiments.benchmark import BenchmarkConfig, EvaluationConfig, EvaluationSet, FRModel, Row
    from grafiqs.experiments.benchmark_report import evaluate

    count = protocol.num_images
    names = ["SER-FIQ", "embedding norm (MagFace)", "FaceQAN", "BNS loss", "GraFIQs BNS loss", "CR-FIQA (file)"]
    rows = [Row(name, rng.random(count), "higher_is_better", "baseline") for name in names]
    for group in ("image", "block1", "block2", "block3", "block4"):
        magnitude = rng.exponential(size=count)
        rows += [Row(f"GraFIQs {group}", magnitude, "lower_is_better", "grafiqs"),
                 Row(f"GraFIQs {group} (larger = better)", magnitude, "higher_is_better", "reading")]
    eset = EvaluationSet("ijbc", protocol, TemplatePairSet(protocol), {})
    judge = FRModel("arcface", None, False, "none", True, {})
    passes = {("ijbc", "arcface", "embedding"): {"embedding": rng.standard_normal((count, 512), dtype=np.float32)}}
    config = BenchmarkConfig("unused", [], [], evaluation=EvaluationConfig(fmrs=list(FMRS), limits=list(LIMITS)))
    return evaluate(config, [eset], [judge], {"ijbc": rows}, passes).records


if __name__ == "__main__":
    main()
