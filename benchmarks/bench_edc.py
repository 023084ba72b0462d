"""Times the EDC + pAUC and the CR-FIQA ERC on random pairs.

    python benchmarks/bench_edc.py [--pairs 10000000] [--erc-pairs 1000000] [--repeats 3]

Each timing is the best of `--repeats` runs (least disturbed by other processes) and
includes input validation; generating the data is not timed. Half of the pairs are mated
by default, the worst case for `edc`, which sorts the mated pairs.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from grafiqs.evaluation.edc import crfiqa_erc, edc


def random_pairs(n: int, mated_fraction: float, seed: int = 0):
    """Cosine-like scores, mated flags and pair qualities that weakly predict the score."""
    rng = np.random.default_rng(seed)
    mated = rng.random(n) < mated_fraction
    scores = np.clip(np.where(mated, rng.normal(0.5, 0.2, n), rng.normal(0.0, 0.15, n)), -1, 1)
    quality = rng.normal(size=n) + 2 * scores
    return scores, mated, quality


def best_time(function, repeats: int):
    """(fastest wall time in seconds, last result)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000_000)
    parser.add_argument("--erc-pairs", type=int, default=1_000_000)
    parser.add_argument("--mated-fraction", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"numpy {np.__version__}, python {platform.python_version()}, {platform.machine()}")

    scores, mated, quality = random_pairs(args.pairs, args.mated_fraction)
    print(f"EDC: {args.pairs:,} pairs, {mated.sum():,} mated")
    total = 0.0
    for fmr in (1e-3, 1e-4):
        def run():
            result = edc(scores, mated, quality, fmr=fmr)
            return result, [result.pauc(limit) for limit in (0.2, 0.3)]

        seconds, (result, paucs) = best_time(run, args.repeats)
        total += seconds
        summary = ", ".join(f"pAUC@{p.limit}={p.raw:.5f} (norm {p.normalised:.4f})" for p in paucs)
        print(f"  FMR {fmr:g}: {seconds:.2f} s  | {result.discard.size:,} points, "
              f"start FNMR {result.start_fnmr:.4f}, {summary}")
    print(f"  both FMRs, both limits: {total:.2f} s")

    scores, mated, quality = random_pairs(args.erc_pairs, args.mated_fraction, seed=1)
    print(f"CR-FIQA ERC: {args.erc_pairs:,} pairs, {mated.sum():,} mated")
    for fmr in (1e-3, 1e-4):
        seconds, result = best_time(lambda: crfiqa_erc(scores, mated, quality, fmr=fmr), args.repeats)
        print(f"  FMR {fmr:g}: {seconds:.2f} s  | AUC {result.auc:.5f}, "
              f"FNMR {result.fnmr[0]:.4f} -> {result.fnmr[-1]:.4f}")


if __name__ == "__main__":
    main()
