"""Which layers carry the signal as depth grows (issue 21, item 4): per-stage BN discrepancy and per-group gradients.

    python benchmarks/depth_signal.py demo=grafiqs/assets/demo_iresnet.ckpt \
        bundled=benchmarks/depth/bundled_backbone.ckpt iresnet18=benchmarks/depth/iresnet18_backbone.ckpt \
        --out docs/depth_signal.png

Held-out synthetic people (default 30 from 2,500,000: disjoint from every training and benchmark set), one clean
enrolment and one probe each, the probe clean and at each of the 7 degradations x 3 severities (the demo's design).
For every model and every probe:

- the BN-statistics discrepancy of each stage alone (the official loss restricted to `stem` = bn1, `layer1` ..
  `layer4`: mean over that stage's BN2d inputs of MSE(mean) + MSE(variance)), and of all layers (the BNS loss);
- the GraFIQs magnitude of each gradient group (`image`, `block1` .. `block4`: sum of |dL/d group|);
- the probe's cosine similarity to its own enrolment (flip-summed embeddings), the utility a quality score predicts.

Two readings of each measure, as Spearman correlations over all probes (positive = the measure does its job):
with the known severity (0-3), and with minus the mated similarity (a larger discrepancy should mean a worse
match). The figure has one panel per reading and kind of measure, the models along x in the order given; the numbers
go to a CSV beside it.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from grafiqs.data.decode import normalize, to_model_tensor
from grafiqs.synthetic import make_verification_probes
from grafiqs.models.loading import load_backbone_and_metadata
from grafiqs.quality.bn_stats import BNInputStatistics
from grafiqs.quality.discrepancy import LossVariant, variant_loss
from grafiqs.quality.scorer import GROUPS, GraFIQsScorer

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
READINGS = ("severity", "mated similarity")


def model_inputs(records, rgb: bool) -> torch.Tensor:
    images = [r.image[..., ::-1].copy() if rgb else r.image for r in records]
    return normalize(torch.stack([to_model_tensor(image) for image in images]))


def measure(model, images: torch.Tensor, batch_size: int) -> dict[str, np.ndarray]:
    """Per-image stage discrepancies, group magnitudes and flip-summed embeddings of one model."""
    statistics, scorer = BNInputStatistics(model), GraFIQsScorer(model)
    columns: dict[str, list] = {}
    for first in range(0, len(images), batch_size):
        batch = images[first:first + batch_size]
        with torch.no_grad(), statistics.record() as recorded:
            embedding = model(batch)
        running = statistics.running()
        for stage in (*STAGES, "all"):
            columns.setdefault(f"discrepancy {stage}", []).append(
                variant_loss(recorded, running, LossVariant(layers=stage)).numpy())
        with torch.no_grad():
            embedding = torch.nn.functional.normalize(embedding + model(batch.flip(3)), dim=1)
        columns.setdefault("embedding", []).append(embedding.numpy())
        for group, magnitude in scorer(batch).scores.items():
            columns.setdefault(f"gradient {group}", []).append(magnitude.numpy())
    return {name: np.concatenate(parts) for name, parts in columns.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="NAME=WEIGHTS", help="models, placed along x in this order")
    parser.add_argument("--identities", type=int, default=30)
    parser.add_argument("--offset", type=int, default=2_500_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="docs/depth_signal.png", help="the figure; its numbers go to <out>.csv")
    args = parser.parse_args()
    models = [text.split("=", 1) for text in args.models]
    if any(len(m) != 2 for m in models):
        parser.error("give each model as NAME=WEIGHTS")

    records = make_verification_probes(args.identities, identity_offset=args.offset, probes_per_identity=1)
    enrol_of = {r.identity: i for i, r in enumerate(records) if r.role == "enrol"}
    probes = [i for i, r in enumerate(records) if r.role == "probe"]
    severity = np.array([records[i].severity for i in probes])
    print(f"{args.identities} people from {args.offset}: {len(probes)} probes ({(severity == 0).sum()} clean)")

    rows = []
    for name, weights in models:
        model, metadata = load_backbone_and_metadata(None, weights)
        blocks = sum(len(getattr(model, f"layer{k}")) for k in range(1, 5))
        values = measure(model.eval(), model_inputs(records, (metadata or {}).get("colour_order") == "rgb"),
                         args.batch_size)
        embedding = values.pop("embedding")
        mated = (embedding[probes] * embedding[[enrol_of[records[i].identity] for i in probes]]).sum(1)
        for measure_name, column in values.items():
            probe_values = column[probes]
            rows.append({"model": name, "blocks": blocks, "measure": measure_name,
                         "severity": spearmanr(probe_values, severity).statistic,
                         "mated similarity": spearmanr(probe_values, -mated).statistic,
                         "clean median": float(np.median(probe_values[severity == 0])),
                         "severity 3 median": float(np.median(probe_values[severity == 3]))})
        print(f"{name} ({blocks} blocks): " + ", ".join(f"{r['measure']} {r['severity']:+.2f}/{r['mated similarity']:+.2f}"
                                                          for r in rows if r["model"] == name))
    write(rows, Path(args.out))


def write(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    kinds = {"discrepancy": [*STAGES, "all"], "gradient": list(GROUPS)}
    names = list(dict.fromkeys(r["model"] for r in rows))  # x: the models in the order given (two may share a depth)
    blocks_of = {r["model"]: r["blocks"] for r in rows}
    figure, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True, sharey=True)
    for row, (kind, parts) in enumerate(kinds.items()):
        for column, reading in enumerate(READINGS):
            axis = axes[row, column]
            for part in parts:
                chosen = [r for r in rows if r["measure"] == f"{kind} {part}"]
                label = "all layers (BNS loss)" if part == "all" else part
                axis.plot([names.index(r["model"]) for r in chosen], [r[reading] for r in chosen], "o-", label=label,
                          lw=2.5 if part == "all" else 1.5)
            axis.axhline(0, color="grey", lw=0.8)
            axis.set_title(f"{'BN discrepancy of each stage' if kind == 'discrepancy' else 'GraFIQs gradient group'}"
                           f" vs {reading}")
            axis.set_ylabel("Spearman (positive = signal)")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
    for axis in axes[1]:
        axis.set_xticks(range(len(names)), [f"{name}\n{blocks_of[name]} blocks" for name in names], fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"wrote {out} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
