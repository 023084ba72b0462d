"""The README's picture of what a score means: a calibration's 0-100 curve over the magnitudes of a scored set.

    python score.py                                    # the demo: outputs/demo/scores.csv with severities
    python benchmarks/calibration_figure.py grafiqs/assets/demo_iresnet.ckpt.calibration.json \
        outputs/demo/scores.csv --group block4 --out docs/calibration.png

Top: quality_0_100 against the group's raw magnitude (log axis), the reference percentiles it was fitted on
marked. Bottom: how the scored set's magnitudes fall on that axis, one histogram per known severity where
scores.csv has a `severity` column (the demo's), else one for all.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from grafiqs.quality.calibration import SigmoidMapping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("calibration")
    parser.add_argument("scores", help="a scores.csv of score.py")
    parser.add_argument("--group", default="block4")
    parser.add_argument("--out", default="docs/calibration.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calibration = json.loads(Path(args.calibration).read_text())
    mapping = SigmoidMapping(**calibration["groups"][args.group])
    fit = calibration["reference"]["groups"][args.group]
    with open(args.scores, newline="") as file:
        rows = [r for r in csv.DictReader(file) if r["status"] == "ok"]
    magnitudes = np.array([float(r[args.group]) for r in rows])
    severities = np.array([int(r["severity"]) for r in rows]) if rows and "severity" in rows[0] else None

    low, high = np.log10(magnitudes.min()) - 0.2, np.log10(magnitudes.max()) + 0.2
    axis_values = np.logspace(low, high, 400)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    top.plot(axis_values, mapping(axis_values), color="black", lw=2)
    for key, label in (("log10_p5", "reference p5"), ("log10_p50", "reference median"), ("log10_p95", "reference p95")):
        value = 10 ** fit[key]
        top.axvline(value, color="grey", ls="--", lw=0.8)
        top.annotate(f"{label}: Q {int(mapping(value))}", (value, int(mapping(value))), textcoords="offset points",
                     xytext=(6, 4), fontsize=8)
    top.set_xscale("log")
    top.set_ylabel("quality_0_100 (higher = better)")
    top.set_title(f"{args.group}: Q = round(100 (1 - sigmoid((log10 m - {mapping.x0:.3f}) / {mapping.w:.3f})))"
                  f"\nfitted on {fit['images']} reference images", fontsize=9)
    top.grid(alpha=0.3)
    bins = np.logspace(low, high, 50)
    groups = [(f"severity {s}", magnitudes[severities == s]) for s in sorted(set(severities))] \
        if severities is not None else [("all", magnitudes)]
    for label, values in groups:
        bottom.hist(values, bins=bins, histtype="step", lw=1.5, label=f"{label} ({len(values)})")
    bottom.set_xlabel(f"GraFIQs {args.group} magnitude (larger = lower quality)")
    bottom.set_ylabel(f"images of {Path(args.scores).parent.name}")
    bottom.legend(fontsize=8)
    figure.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
