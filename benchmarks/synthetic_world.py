"""Does a synthetic set's degradation make its FR model fail? Per kind and severity, from a benchmark folder.

    python benchmarks/synthetic_world.py outputs/benchmark/synthetic [--fmr 1e-3]

For each synthetic set and judging FR model of a finished benchmark run (its summary.json,
scores/ and cached embedding passes): the false non-match rate of the mated pairs at the
threshold of `--fmr` (fixed once on all comparisons, as the EDC fixes it), per degradation
kind and severity of the probe, the mean genuine similarity, and where each method puts those
probes: the mean percentile of their quality among all probes (0 = judged worst, 50 = no
opinion). A FIQA method can only lower the EDC if the FR model's errors concentrate on what it
finds to be bad quality: if severity 3 probes fail no more often than clean ones, the world, not
the method, is flat; if they fail and a method ranks them in the middle, the method is.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from grafiqs.evaluation.edc import threshold_at_fmr
from grafiqs.synthetic.drawn_set import read_labels


SHOWN = ("SER-FIQ", "FaceQAN", "embedding norm (MagFace)", "GraFIQs image", "GraFIQs block4", "GraFIQs BNS loss")


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
            rows = list(reader)
        names = [row["image"] for row in rows]
        methods = [c for c in reader.fieldnames if c not in ("image", "degradation", "severity")
                   and not c.endswith("(larger = better)") and "|" not in c]
        labels = read_labels(info["source"], names)
        probes = np.flatnonzero(~labels.enrol)
        percentile = {}
        for method in methods:  # GraFIQs magnitudes and losses: larger = worse; the others: larger = better
            values = np.array([float(rows[i][method]) for i in probes])
            better = -values if method.startswith("GraFIQs") or method.endswith("loss") else values
            percentile[method] = np.full(len(rows), np.nan)
            percentile[method][probes] = 100 * np.argsort(np.argsort(better)) / max(len(values) - 1, 1)
        pairs = labels.pairs()
        probe = pairs.first  # pairs are probe x enrolment
        for key, folder in summary["passes"].items():
            set_, model, method = key.split("/")
            if set_ != set_name or method != "embedding":
                continue
            similarity = pairs.similarity(np.load(Path(folder) / "values.npz")["embedding"])
            threshold = threshold_at_fmr(similarity, pairs.mated, args.fmr)
            print(f"\n{set_name}, judged by {model}: FNMR at FMR {args.fmr:g} (threshold {threshold:.3f}) per probe kind")
            shown = [m for m in methods if m in SHOWN]
            print("| kind | severity | mated pairs | FNMR | mean genuine similarity | "
                  + " | ".join(f"{m} percentile" for m in shown) + " |\n|---|---:|---:|---:|---:|" + "---:|" * len(shown))
            kinds = np.array(labels.degradation)[probe]
            severity = labels.severity[probe]
            for kind in sorted(set(kinds[pairs.mated])):
                for level in sorted(set(severity[pairs.mated & (kinds == kind)])):
                    chosen = pairs.mated & (kinds == kind) & (severity == level)
                    fnmr = float(np.mean(similarity[chosen] <= threshold))
                    images = np.flatnonzero(~labels.enrol & (np.array(labels.degradation) == kind) & (labels.severity == level))
                    ranks = " | ".join(f"{percentile[m][images].mean():.0f}" for m in shown)
                    print(f"| {kind} | {level} | {int(chosen.sum())} | {fnmr:.3f} | {similarity[chosen].mean():.3f} | {ranks} |")


if __name__ == "__main__":
    main()
