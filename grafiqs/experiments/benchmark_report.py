"""The benchmark's evaluation and report: EDC/pAUC per (FR model, set, method), tables, plots, W&B.

`evaluate` turns every row of every set into discard orders, judged by each FR model's
similarities; `write_report` writes the papers' tables (grafiqs.evaluation.tables), one ranked
table per set and model (grafiqs.evaluation.report, as the ablation runner showed it), the
per-image values, the EDC grids and the W&B run.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grafiqs.io.score_files import safe_file_name


def ranked_stem(set_name: str, model: str) -> str:
    return f"ranked/{safe_file_name(set_name)}__{safe_file_name(model)}"


def edc_grid_name(model: str, fmr: float) -> str:
    return f"edc_{safe_file_name(model)}_fmr{fmr:g}.png"


def scores_name(set_name: str) -> str:
    return f"scores/{safe_file_name(set_name)}.csv"


@dataclass
class Evaluation:
    records: list[dict] = field(default_factory=list)  # long form: one per model, set, method, FMR, limit
    results: dict = field(default_factory=dict)  # (model, set) -> [OrderResult]
    not_finite: dict = field(default_factory=dict)  # "set/method" -> images whose quality is NaN (counted worst)


def evaluate(config, sets, judges, rows: dict, passes: dict) -> Evaluation:
    """Every row of every set at every FMR and limit, per judging FR model."""
    from grafiqs.evaluation.edc import CRFIQAERC, to_higher_is_better
    from grafiqs.evaluation.report import evaluate_orders

    settings = config.evaluation
    evaluation = Evaluation()
    orders = {}
    for eset in sets:
        orders[eset.name] = {}
        for row in rows[eset.name]:
            quality = to_higher_is_better(row.values, row.orientation)
            missing = np.isnan(quality)
            if missing.any():
                evaluation.not_finite[f"{eset.name}/{row.name}"] = int(missing.sum())
            orders[eset.name][row.name] = (np.where(missing, -np.inf, quality), "higher_is_better")
    for model in judges:
        for eset in sets:
            similarity = eset.comparisons.similarity(passes[eset.name, model.name, "embedding"]["embedding"])
            results = evaluate_orders(similarity, eset.comparisons, orders[eset.name], settings.fmrs,
                                      severity=eset.severity, seed=config.seed)
            if settings.crfiqa_erc:
                erc_of = CRFIQAERC(similarity, eset.comparisons.mated)
                for result in results:
                    if result.name in orders[eset.name]:
                        quality = eset.comparisons.quality(*orders[eset.name][result.name])
                        erc = erc_of(quality, fmr=settings.fmrs[0])
                        result.extra[f"erc_auc_crfiqa@fmr{settings.fmrs[0]:g}"] = erc.auc
            evaluation.results[model.name, eset.name] = results
            for result in results:
                erc = next(iter(result.extra.values()), math.nan)
                for fmr in settings.fmrs:
                    curve = result.curves[fmr]
                    for limit in settings.limits:
                        p = curve.pauc(limit)
                        evaluation.records.append({
                            "model": model.name, "set": eset.name, "method": result.name, "fmr": fmr, "limit": limit,
                            "fnmr0": curve.start_fnmr, "pauc_norm": p.normalised, "pauc_raw": p.raw,
                            "pauc_minus_best": p.minus_best, "erc_auc": erc if fmr == settings.fmrs[0] else math.nan})
    return evaluation


def plotted_methods(config, rows: dict, records: list[dict]) -> list[str]:
    """The methods, baselines and official GraFIQs rows (not read the other way), the `plot_top` other variants of
    best mean pAUC, and the references."""
    from grafiqs.evaluation.report import REFERENCES

    kinds = {row.name: row.kind for set_rows in rows.values() for row in set_rows}
    first, last = config.evaluation.fmrs[0], config.evaluation.limits[-1]
    scores: dict[str, list[float]] = {}
    for r in records:
        if kinds.get(r["method"]) == "variant" and r["fmr"] == first and r["limit"] == last:
            scores.setdefault(r["method"], []).append(r["pauc_norm"])
    top = sorted(scores, key=lambda name: np.nanmean(scores[name]) if not np.isnan(scores[name]).all() else math.inf)
    shown = set(top[:config.evaluation.plot_top])
    return [n for n, kind in kinds.items() if kind not in ("variant", "reading") or n in shown] + list(REFERENCES)


def write_report(config, out: Path, sets, rows: dict, evaluation: Evaluation) -> dict:
    from grafiqs.evaluation.report import table_rows, write_table
    from grafiqs.evaluation.tables import plot_edc_grid, write_comparison_tables

    settings = config.evaluation
    written = write_comparison_tables(evaluation.records, out, settings.metrics)
    for (model, set_name), results in evaluation.results.items():
        header, ranked = table_rows(results, settings.fmrs, settings.limits)
        folder, stem = ranked_stem(set_name, model).split("/")
        write_table(header, ranked, out / folder, stem=stem)
    for eset in sets:
        write_scores(out / scores_name(eset.name), eset, rows[eset.name])
    methods = plotted_methods(config, rows, evaluation.records)
    names = [s.name for s in sets]
    plots = []
    for model in dict.fromkeys(m for m, _ in evaluation.results):
        for fmr in settings.fmrs:
            curves = {(s, r.name): r.curves[fmr] for (m, s), results in evaluation.results.items() if m == model
                      for r in results}
            plots.append(plot_edc_grid(curves, names, methods, fmr, out / edc_grid_name(model, fmr),
                                       limit=settings.limits[-1],
                                       title=f"{config.name or out.name}: judged by {model}, FMR {fmr:g}"))
    summary = {
        "sets": {s.name: {"source": str(s.images.source), "images": s.images.num_images,
                          "comparisons": int(len(s.comparisons.mated)),
                          "mated": int(np.sum(s.comparisons.mated))} for s in sets},
        "not_finite_qualities": evaluation.not_finite,
        "tables": str(written["markdown"]),
    }
    wandb_dir = log_to_wandb(config, out, evaluation.records, written, plots, summary)
    return {**written, "plots": plots, "wandb_dir": wandb_dir, "summary": summary, "records": evaluation.records}


def write_scores(path: Path, eset, rows) -> None:
    """Per-image values of every row (raw, as the method gives them), with the synthetic labels if any."""
    from grafiqs.io.score_files import write_csv

    labels = ["degradation", "severity"] if eset.severity is not None else []
    names = eset.images.names
    lines = ([names[i], *((eset.degradation[i], int(eset.severity[i])) if labels else ()),
              *(f"{float(row.values[i]):.9g}" for row in rows)] for i in range(len(names)))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, ["image", *labels, *(row.name for row in rows)], lines)


def log_to_wandb(config, out: Path, records, written: dict, plots, summary: dict) -> Path | None:
    """One W&B run: the whole config, the long results table, every comparison table and the EDC grids."""
    settings = config.wandb
    if settings.mode == "disabled":
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=settings.project, name=settings.name or config.name, mode=settings.mode, dir=str(out),
                     config=dataclasses.asdict(config), job_type="benchmark", reinit="finish_previous")
    columns = ["model", "set", "method", "fmr", "limit", "fnmr0", "pauc_norm", "pauc_raw", "pauc_minus_best", "erc_auc"]
    table = wandb.Table(columns=columns, data=[[None if isinstance(r[c], float) and math.isnan(r[c]) else r[c]
                                                for c in columns] for r in records])
    first, last = config.evaluation.fmrs[0], config.evaluation.limits[-1]
    for r in records:
        if r["fmr"] == first and r["limit"] == last:
            run.summary[f"pauc_norm@fmr{first:g},discard{last:g}/{r['model']}/{r['set']}/{r['method']}"] = r["pauc_norm"]
    run.summary.update({key: value for key, value in summary.items() if key != "not_finite_qualities"})
    markdown = {Path(p).stem: wandb.Html(f"<pre>{Path(p).read_text(encoding='utf-8')}</pre>")
                for p in written["tables"] if str(p).endswith(".md")}
    run.log({"results": table, **markdown, **{Path(p).stem: wandb.Image(str(p)) for p in plots}})
    run_dir = Path(run.dir).parent
    run.finish()
    return run_dir
