"""Does a synthetic set's degradation make its FR model fail? Per kind and severity, from a benchmark folder.

    python benchmarks/synthetic_world.py outputs/benchmark/synthetic [--fmr 1e-3]

For each synthetic set and judging FR model of a finished benchmark run (its summary.json,
scores/ and cached embedding passes): the false non-match rate of the mated pairs at the
threshold of `--fmr` (fixed once on all comparisons, as the EDC fixes it), per degradation
kind and severity of the probe, and the mean genuine similarity. A FIQA method can only
lower the EDC if the FR model's errors concentrate on what it finds to be bad quality: if
severity 3 probes fail no more often than clean ones, the world, not the method, is flat.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from grafiqs.evaluation.edc import threshold_at_fmr
from grafiqs.experiments.synthetic_set import read_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="output_dir of a benchmark run with synthetic sets")
    parser.add_argument("--fmr", type=float, default=1e-3)
    args = parser.parse_args()
    summary = json.loads((args.folder / "summary.json").read_text())
    for set_name, info in summary["sets"].items():
        scores = args.folder / "scores" / f"{set_name}.csv"
        with open(scores, newline="") as handle:
            reader = csv.DictReader(handle)
            if "severity" not in (reader.fieldnames or []):
                continue
            names = [row["image"] for row in reader]
        labels = read_labels(info["source"], names)
        pairs = labels.pairs()
        probe = pairs.first  # pairs are probe x enrolment
        for key, folder in summary["passes"].items():
            set_, model, method = key.split("/")
            if set_ != set_name or method != "embedding":
                continue
            similarity = pairs.similarity(np.load(Path(folder) / "values.npz")["embedding"])
            threshold = threshold_at_fmr(similarity, pairs.mated, args.fmr)
            print(f"\n{set_name}, judged by {model}: FNMR at FMR {args.fmr:g} (threshold {threshold:.3f}) per probe kind")
            print("| kind | severity | mated pairs | FNMR | mean genuine similarity |\n|---|---:|---:|---:|---:|")
            kinds = np.array(labels.degradation)[probe]
            severity = labels.severity[probe]
            for kind in sorted(set(kinds[pairs.mated])):
                for level in sorted(set(severity[pairs.mated & (kinds == kind)])):
                    chosen = pairs.mated & (kinds == kind) & (severity == level)
                    fnmr = float(np.mean(similarity[chosen] <= threshold))
                    print(f"| {kind} | {level} | {int(chosen.sum())} | {fnmr:.3f} | {similarity[chosen].mean():.3f} |")


if __name__ == "__main__":
    main()
