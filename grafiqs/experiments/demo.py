"""The demo `python score.py` runs without arguments: the bundled model on a synthetic verification set.

Severity is not utility: a degradation the model shrugs off should not lower quality. So the
demo judges GraFIQs by verification: clean enrolments against clean and degraded probes of
identities the model never saw, the threshold fixed at FMR 1e-3 on all comparisons, and the
FNMR as the lowest-quality probes are discarded (EDC). Each group's normalised pAUC (1.0 = no
better than not discarding) stands beside random discarding and discarding by known severity;
Spearman with severity is the secondary figure.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from grafiqs.evaluation.report import evaluate_orders, plot_edcs, table_rows, write_table
from grafiqs.synthetic.drawn_set import LabelledImages, SyntheticSetSpec

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_WEIGHTS = ASSETS / "demo_iresnet.ckpt"  # the wide iresnet34 rung of the depth experiment, see grafiqs/assets/README.md
DEMO_SET = SyntheticSetSpec(num_identities=100, probes_per_identity=1)
DEMO_FMRS = (1e-3,)
DEMO_LIMITS = (0.2, 0.3)


def report_demo(output_dir: Path, magnitudes: dict[str, np.ndarray], embeddings: np.ndarray, labels: LabelledImages) -> str:
    """Evaluate the groups' magnitudes on the set's pairs; write demo_table.{csv,md} and edc.png; return the table."""
    pairs = labels.pairs()
    similarity = pairs.similarity(embeddings)
    orders = {f"GraFIQs {group}": (values, "lower_is_better") for group, values in magnitudes.items()}
    results = evaluate_orders(similarity, pairs, orders, DEMO_FMRS, severity=labels.severity)
    header, rows = table_rows(results, DEMO_FMRS, DEMO_LIMITS)
    write_table(header, rows, output_dir, stem="demo_table")
    plot_edcs(results, DEMO_FMRS[0], output_dir / "edc.png", limit=DEMO_LIMITS[-1],
              title="Demo: clean enrolment vs degraded probes of unseen synthetic identities")
    columns = [header.index(h) for h in header if h.startswith("pauc_norm")] + [header.index("spearman_severity")]
    start = results[0].curves[DEMO_FMRS[0]]
    lines = [
        f"{int(pairs.mated.sum())} mated / {int((~pairs.mated).sum())} non-mated comparisons; threshold at FMR 1e-3: "
        f"cos {start.threshold:.3f}, FNMR with nothing discarded {start.start_fnmr:.3f}",
        f"{'discard order':28s} {'pAUC0.2 norm':>12s} {'pAUC0.3 norm':>12s} {'Spearman':>9s}   (pAUC: lower = better, 1.0 = no gain)",
    ]
    for row in rows:
        cells = [f"{row[i]:12.3f}" for i in columns[:-1]] + ["" if np.isnan(row[columns[-1]]) else f"{row[columns[-1]]:9.3f}"]
        lines.append(f"{row[0]:28s} " + " ".join(cells))
    return "\n".join(lines)
