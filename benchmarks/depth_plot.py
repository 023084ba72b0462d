"""The depth experiment's figure (issue 21): normalised pAUC against depth, one line per method.

    python benchmarks/depth_plot.py bundled=outputs/benchmark/depth/bundled iresnet18=outputs/benchmark/depth/iresnet18 \
        iresnet34=outputs/benchmark/depth/iresnet34 --out docs/depth_pauc.png

Each NAME=FOLDER is one rung's `benchmark.py --config configs/benchmark/depth.yaml` output (its results_long.csv);
the rungs stand along x in the order given, each labelled with its residual blocks (read from the architecture
that its cached passes record, so two rungs of one depth, e.g. on schedules of different length, can stand side
by side). Left: the demo's set
(what `make demo` measures); right: the mean over the benchmark's five sets. Same-model reading (the rung judges
its own pairs), FMR 1e-3, discard 0.3. The numbers go to <out>.csv.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

METHODS = ("GraFIQs image", "GraFIQs block1", "GraFIQs block2", "GraFIQs block3", "GraFIQs block4",
           "GraFIQs BNS loss", "SER-FIQ", "embedding norm (MagFace)", "reference: random", "reference: known severity")


def rung_blocks(folder: Path) -> int:
    """Residual blocks of the rung's quality model, from the settings its first cached pass was keyed by."""
    first = next(folder.glob("cache/*/rung/*/pass.json"))  # cache/<set>/<model>/<method>-<key>/pass.json
    architecture = json.loads(first.read_text())["settings"]["model"]["architecture"]
    return sum(architecture[:4])  # layers per stage, then the widths


def read_rung(folder: Path, fmr: float, limit: float) -> dict[str, dict[str, float]]:
    """method -> set -> normalised pAUC of the same-model reading (model `rung`)."""
    values: dict[str, dict[str, float]] = {}
    with open(folder / "results_long.csv", newline="") as file:
        for row in csv.DictReader(file):
            if row["model"] == "rung" and float(row["fmr"]) == fmr and float(row["limit"]) == limit:
                values.setdefault(row["method"], {})[row["set"]] = float(row["pauc_norm"])
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rungs", nargs="+", metavar="NAME=FOLDER")
    parser.add_argument("--fmr", type=float, default=1e-3)
    parser.add_argument("--limit", type=float, default=0.3)
    parser.add_argument("--out", default="docs/depth_pauc.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rungs = [(name, rung_blocks(Path(folder)), read_rung(Path(folder), args.fmr, args.limit))
             for name, folder in (text.split("=", 1) for text in args.rungs)]
    rows = []
    for name, blocks, values in rungs:
        for method in METHODS:
            sets = values.get(method, {})
            rows.append({"rung": name, "blocks": blocks, "method": method, "demo": sets.get("demo", np.nan),
                         "mean of sets": float(np.mean(list(sets.values()))) if sets else np.nan})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    figure, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for axis, column in zip(axes, ("demo", "mean of sets")):
        for method in METHODS:
            chosen = [r for r in rows if r["method"] == method]
            style = {"ls": "--", "color": "silver" if "random" in method else "black"} if method.startswith("reference") \
                else {"lw": 2.5 if method == "GraFIQs block4" else 1.5}
            axis.plot(range(len(rungs)), [r[column] for r in chosen], marker="o", label=method, **style)
        axis.axhline(0.85, color="red", lw=0.8, ls=":")
        axis.set_xticks(range(len(rungs)), [f"{name}\n{blocks} blocks" for name, blocks, _ in rungs], fontsize=8)
        axis.set_title(f"{'the demo set (make demo)' if column == 'demo' else 'mean of the five sets'}: "
                       f"pAUC@FMR {args.fmr:g}, discard {args.limit:g}, same model", fontsize=9)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("normalised pAUC (1 = no gain, lower = better)")
    axes[0].text(0.01, 0.02, "dotted red: the goal for the demo, 0.85", transform=axes[0].transAxes, fontsize=8)
    axes[1].legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"wrote {out} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
