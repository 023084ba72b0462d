"""Rank quality orders by how much discarding them helps verification: tables and EDC plots.

One place turns per-image quality values (GraFIQs magnitudes, ablation variants, known
degradation severity) into the numbers a reader compares: for every order, the ISO EDC at
each target FMR with the threshold fixed once on all comparisons, its pAUC (raw, minus the
theoretical best, normalised by FNMR(0) x limit) and, where labels exist, the Spearman
correlation with severity. Random discarding is always one of the rows, so a reader sees
what an order adds over not knowing anything.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from grafiqs.io.atomic import atomic_write_text, atomic_write_with
from grafiqs.io.score_files import write_csv
from grafiqs.evaluation.edc import (
    EDCResult, Orientation, edc_for_order, pair_quality, random_order_edc, threshold_at_fmr, to_higher_is_better,
)

RANDOM = "reference: random"
SEVERITY = "reference: known severity"  # random order within a severity level, see evaluate_orders
REFERENCES = (RANDOM, SEVERITY)


def average_ranks(values) -> np.ndarray:
    """Ranks 1..n with ties sharing their average rank (as scipy.stats.rankdata's default)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(a, b) -> float:
    """Spearman's rank correlation with average ranks for ties; NaN when either side is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denominator if denominator > 0 else math.nan


@dataclass
class OrderResult:
    """One discard order evaluated at every target FMR."""

    name: str
    curves: dict[float, EDCResult]  # fmr -> EDC
    spearman_severity: float = math.nan  # correlation of "worse" with severity (positive = agrees)
    extra: dict = field(default_factory=dict)  # e.g. the CR-FIQA ERC AUC, shown as more columns

    def pauc(self, fmr: float, limit: float):
        return self.curves[fmr].pauc(limit)


@dataclass
class PairSet:
    """Comparisons between images of one scored set: indices into the per-image arrays."""

    first: np.ndarray
    second: np.ndarray
    mated: np.ndarray

    def similarity(self, embeddings: np.ndarray) -> np.ndarray:
        """Cosine similarity of each pair (embeddings need not be normalised)."""
        e = np.asarray(embeddings, dtype=np.float64)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        return np.einsum("ij,ij->i", e[self.first], e[self.second])

    def quality(self, per_image, orientation: Orientation) -> np.ndarray:
        """Each pair's "higher is better" quality: that of its worse image."""
        per_image = np.asarray(per_image, dtype=np.float64)
        return pair_quality(per_image[self.first], per_image[self.second], orientation)


def evaluate_orders(
    similarity: np.ndarray,
    pairs: PairSet,
    orders: Mapping[str, tuple[np.ndarray, Orientation]],
    fmrs: Sequence[float] = (1e-3,),
    severity: np.ndarray | None = None,
    seed: int = 0,
) -> list[OrderResult]:
    """EDCs of every per-image order in `orders` (name -> (values, orientation)), plus the references.

    The threshold at each FMR is fixed once on all comparisons and shared by every order, so
    the curves differ only in which pairs are discarded first. `severity` (per image, 0 =
    clean) adds the known-severity reference and each order's Spearman correlation with it. Within a
    severity level that reference discards in random order: with ties kept together (ISO), a level
    larger than the pAUC limit would otherwise be discarded all at once, past the limit, and the
    reference would show no gain at all.
    """
    thresholds = {fmr: threshold_at_fmr(similarity, pairs.mated, fmr) for fmr in fmrs}

    def curves(per_image, orientation: Orientation) -> dict[float, EDCResult]:
        quality = pairs.quality(per_image, orientation)
        return {fmr: edc_for_order(similarity, pairs.mated, quality, t) for fmr, t in thresholds.items()}

    results = []
    for name, (values, orientation) in orders.items():
        worse = -to_higher_is_better(values, orientation)
        rho = spearman(worse, severity) if severity is not None else math.nan
        results.append(OrderResult(name, curves(values, orientation), rho))
    results.append(OrderResult(RANDOM, {fmr: random_order_edc(similarity, pairs.mated, t, seed=seed) for fmr, t in thresholds.items()}))
    if severity is not None:
        jitter = np.random.default_rng(seed + 1).random(len(severity)) * 0.5  # < 1: only breaks ties within a level
        results.append(OrderResult(SEVERITY, curves(np.asarray(severity, dtype=np.float64) + jitter, "lower_is_better"), 1.0))
    return results


def _fmr_label(fmr: float) -> str:
    return f"{fmr:.0e}".replace("e-0", "e-")


def table_rows(results: Sequence[OrderResult], fmrs: Sequence[float], limits: Sequence[float]) -> tuple[list[str], list[list]]:
    """Header and rows ranked by the normalised pAUC at the first FMR and the last limit (lower = better)."""
    header = ["order"]
    for fmr in fmrs:
        header.append(f"fnmr0@fmr{_fmr_label(fmr)}")
        for limit in limits:
            tag = f"@fmr{_fmr_label(fmr)},discard{limit:g}"
            header += [f"pauc_norm{tag}", f"pauc_raw{tag}", f"pauc_minus_best{tag}"]
    extra_keys = sorted({key for r in results for key in r.extra})
    header += ["spearman_severity", *extra_keys]
    rows = []
    for r in results:
        row: list = [r.name]
        for fmr in fmrs:
            row.append(r.curves[fmr].start_fnmr)
            for limit in limits:
                p = r.pauc(fmr, limit)
                row += [p.normalised, p.raw, p.minus_best]
        row += [r.spearman_severity, *(r.extra.get(k, math.nan) for k in extra_keys)]
        rows.append(row)
    key = header.index(f"pauc_norm@fmr{_fmr_label(fmrs[0])},discard{limits[-1]:g}")
    rows.sort(key=lambda row: (math.isnan(row[key]), row[key]))
    return header, rows


def write_table(header: Sequence[str], rows: Sequence[Sequence], out_dir: Path, stem: str = "results") -> tuple[Path, Path]:
    """`<stem>.csv` (every number) and `<stem>.md` (normalised pAUC, start FNMR, Spearman) of `table_rows`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    write_csv(csv_path, header, ([row[0], *(f"{v:.6g}" for v in row[1:])] for row in rows))
    atomic_write_text(md_path, markdown_table(header, rows))
    return csv_path, md_path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """The normalised pAUC columns, the start FNMRs and Spearman as a markdown table (1.0 = no gain)."""
    keep = [i for i, h in enumerate(header) if i == 0 or h.startswith(("pauc_norm", "fnmr0", "spearman", "erc"))]
    names = [header[i].replace("pauc_norm@", "pAUC/(FNMR0·L) ").replace("spearman_severity", "Spearman vs severity") for i in keep]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(keep)]
    for row in rows:
        cells = [str(row[0]).replace("|", "\\|")] + ["" if math.isnan(row[i]) else f"{row[i]:.3f}" for i in keep[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_edcs(results: Sequence[OrderResult], fmr: float, path: Path, limit: float = 0.3, title: str = "",
              max_discard: float = 0.5) -> Path:
    """Step plot of FNMR against the discarded share of mated pairs; references dashed."""
    from matplotlib.figure import Figure  # no pyplot: works headless and leaves a notebook's backend alone

    figure = Figure(figsize=(7, 4.5), dpi=120)
    axis = figure.subplots()
    for r in results:
        curve = r.curves[fmr]
        reference = r.name in REFERENCES
        axis.step(curve.discard, curve.fnmr, where="post", linestyle="--" if reference else "-", linewidth=1.2,
                  label=f"{r.name} ({r.pauc(fmr, limit).normalised:.3f})")
    axis.axvline(limit, color="gray", linewidth=0.8, linestyle=":")
    axis.set_xlim(0, max_discard)
    axis.set_ylim(bottom=0)
    axis.set_xlabel("share of mated comparisons discarded (lowest quality first)")
    axis.set_ylabel(f"FNMR at fixed threshold (FMR {_fmr_label(fmr)})")
    axis.set_title(title or f"EDC, legend: pAUC to {limit:g} / (FNMR(0) x {limit:g})", fontsize=10)
    axis.legend(fontsize=7, loc="upper right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(path, lambda file: figure.savefig(file, format="png"))
    return path
