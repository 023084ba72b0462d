"""One ablation experiment from a YAML file: score every variant, evaluate on verification pairs, report.

    python ablate.py --config configs/ablation/synthetic.yaml

Steps: (1) the pair set's unique images go through `VariantScorer` once per batch (one forward
serves every variant, one backward per loss variant, a vmapped per-sample pass for weight
groups); (2) every column is turned into a discard order and evaluated with the ISO EDC at
each FMR (threshold fixed once on all comparisons), beside random discarding and, for
synthetic sets, discarding by known severity; (3) the ranked table (CSV, markdown), EDC plots
(PNG), the raw per-image columns (`scores.csv`) and a W&B run (offline unless told otherwise)
go to the output folder.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from grafiqs.errors import InputError

DATA_KINDS = ("synthetic", "bin", "lfw", "pair_list")
TOP_LEVEL = {"name", "output_dir", "weights", "backbone", "bgr2rgb", "data", "variants", "evaluation", "comparison_model",
             "batch_size", "num_workers", "precision", "wandb", "seed"}


@dataclass
class AblationData:
    vset: object  # grafiqs.data.verification.VerificationSet
    severity: np.ndarray | None  # per image, synthetic sets only
    degradation: list[str] | None


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """The YAML config (safe loader: plain data only) with top-level `overrides` applied."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ablation config not found: {path}")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a mapping of options at the top level")
    config.update(overrides or {})
    unknown = set(config) - TOP_LEVEL
    if unknown:
        raise InputError(f"{path}: unknown options {sorted(unknown)}; known: {sorted(TOP_LEVEL)}")
    for key in ("weights", "data", "output_dir"):
        if key not in config:
            raise InputError(f"{path}: `{key}` is required")
    return config


def load_data(config: dict) -> AblationData:
    from grafiqs.data.verification import VerificationSet, load_bin_pairs, load_lfw_pairs, load_pair_list
    from grafiqs.experiments.synthetic_set import SyntheticSetSpec, prepare_synthetic_set, read_labels

    data = dict(config["data"])
    kind = data.pop("kind", None)
    if kind not in DATA_KINDS:
        raise InputError(f"data.kind must be one of {', '.join(DATA_KINDS)}, got {kind!r}")
    if kind == "synthetic":
        folder = Path(data.pop("folder", Path(config["output_dir"]) / "images"))
        prepare_synthetic_set(folder, SyntheticSetSpec.from_dict(data))
        labels = read_labels(folder)
        names = list(labels.rows)
        pairs = labels.pairs()
        vset = VerificationSet(str(folder), [str(folder / n) for n in names], np.stack([pairs.first, pairs.second], 1),
                               pairs.mated, names)
        return AblationData(vset, labels.severity, labels.degradation)
    try:
        if kind == "bin":
            vset = load_bin_pairs(data["path"])
        elif kind == "lfw":
            vset = load_lfw_pairs(data["pairs"], data["images"], data.get("extension", "jpg"))
        else:
            vset = load_pair_list(data["dir"])
    except KeyError as error:
        needed = {"bin": "path", "lfw": "pairs, images", "pair_list": "dir"}[kind]
        raise InputError(f"data.kind={kind} needs data.{error.args[0]} (options: {needed})") from None
    return AblationData(vset, None, None)


def build_scorer(model, variants: dict):
    """VariantScorer from the `variants` section: loss grids x groups x aggregations (+ weight groups)."""
    from grafiqs.quality.discrepancy import OFFICIAL_LOSS, parse_loss_variant
    from grafiqs.quality.groups import ACTIVATION_GROUPS, VariantScorer, loss_grid

    variants = dict(variants or {})
    losses = []
    for grid in variants.get("losses", [{}]):
        losses += loss_grid(grid.get("terms", ["mean+var"]), grid.get("distances", ["mse"]), grid.get("layers", ["all"]))
    named = variants.get("parameter_losses")
    parameter_losses = [parse_loss_variant(t) for t in named] if named is not None else [OFFICIAL_LOSS]
    return VariantScorer(
        model, losses,
        groups=list(variants.get("groups", ACTIVATION_GROUPS)) + list(variants.get("parameter_groups", [])),
        aggregations=variants.get("aggregations", ["l1"]),
        param_chunk_size=variants.get("param_chunk_size", 8),
        parameter_losses=parameter_losses,
    )


def score_variants(config: dict, data: AblationData, model, bgr2rgb: bool):
    """Every column for every image, the embeddings that judge the pairs, and the time per pass."""
    import lightning as L
    from torch.utils.data import DataLoader

    from grafiqs.data.verification import VerificationImages
    from grafiqs.lit.quality_module import VariantModule

    scorer = build_scorer(model, config.get("variants"))
    comparison, swap = None, False
    if config.get("comparison_model"):
        comparison, comparison_rgb = load_model(config["comparison_model"])
        swap = comparison_rgb != bgr2rgb
    loader = DataLoader(VerificationImages(data.vset, bgr2rgb=bgr2rgb), batch_size=int(config.get("batch_size", 32)),
                        num_workers=int(config.get("num_workers", 1)))
    trainer = L.Trainer(accelerator="auto", devices=1, inference_mode=False, logger=False, enable_checkpointing=False,
                        enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
        batches = trainer.predict(VariantModule(scorer, comparison, swap), loader)
    order = np.concatenate([b["index"].numpy() for b in batches])
    columns = {name: np.empty(len(order)) for name in scorer.columns}
    for name in scorer.columns:
        columns[name][order] = np.concatenate([b["columns"][name].double().numpy() for b in batches])
    embeddings = np.empty((len(order), batches[0]["embedding"].shape[1]), dtype=np.float32)
    embeddings[order] = np.concatenate([b["embedding"].numpy() for b in batches])
    seconds = {key: float(sum(b["seconds"].get(key, 0.0) for b in batches)) for key in ("activation_pass", "parameter_pass")}
    return columns, embeddings, seconds, scorer


def load_model(section: dict | str):
    """(eval backbone, feeds RGB?) from `{weights, backbone, bgr2rgb}`; a checkpoint's colour order is the default."""
    from grafiqs.models.loading import load_backbone_and_metadata

    section = {"weights": section} if isinstance(section, str) else dict(section)
    model, metadata = load_backbone_and_metadata(section.get("backbone"), section["weights"])
    rgb = section.get("bgr2rgb")
    if rgb is None:
        rgb = metadata is not None and metadata["colour_order"] == "rgb"
    return model, bool(rgb)


def run_ablation(config: dict) -> dict:
    """Run the experiment; returns paths of what it wrote and the ranked rows."""
    from grafiqs.data.score_files import atomic_write_npy
    from grafiqs.evaluation.edc import crfiqa_erc
    from grafiqs.evaluation.report import REFERENCES, PairSet, evaluate_orders, plot_edcs, table_rows, write_table
    from grafiqs.quality.groups import Variant

    started = time.perf_counter()
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    evaluation = dict(config.get("evaluation") or {})
    fmrs = [float(f) for f in evaluation.get("fmrs", [1e-3, 1e-4])]
    limits = [float(v) for v in evaluation.get("limits", [0.2, 0.3])]

    data = load_data(config)
    model, rgb = load_model({k: config[k] for k in ("weights", "backbone", "bgr2rgb") if k in config})
    print(f"ablation {config.get('name', out.name)}: {data.vset.num_images} images, {len(data.vset)} pairs", flush=True)
    columns, embeddings, seconds, scorer = score_variants(config, data, model, rgb)

    pairs = PairSet(data.vset.pairs[:, 0], data.vset.pairs[:, 1], data.vset.issame)
    similarity = pairs.similarity(embeddings)
    orders = {name: (values, "lower_is_better") for name, values in columns.items()}  # larger = worse, bns_loss too
    results = evaluate_orders(similarity, pairs, orders, fmrs, severity=data.severity, seed=int(config.get("seed", 0)))
    if evaluation.get("crfiqa_erc", True):
        for result in results:
            values = columns.get(result.name)
            if values is not None:
                erc = crfiqa_erc(similarity, pairs.mated, pairs.quality(values, "lower_is_better"), fmr=fmrs[0])
                result.extra[f"erc_auc_crfiqa@fmr{fmrs[0]:g}"] = erc.auc
    header, rows = table_rows(results, fmrs, limits)
    csv_path, md_path = write_table(header, rows, out, stem="results")
    plots = []
    official = Variant().name  # the official GraFIQs score: MSE of mean and variance, all layers, image, L1
    top = [r for r in rows if r[0] not in REFERENCES][: int(evaluation.get("plot_top", 6))]
    shown = {r[0] for r in top} | {official} | set(REFERENCES)
    for fmr in fmrs:
        plots.append(plot_edcs([r for r in results if r.name in shown], fmr, out / f"edc_fmr{fmr:g}.png", limit=limits[-1],
                               title=f"{config.get('name', '')}: best variants, official GraFIQs and references"))
    write_columns(out / "scores.csv", data, columns)
    atomic_write_npy(out / "embeddings.npy", embeddings)
    summary = {
        "images": data.vset.num_images, "pairs": len(data.vset), "mated": int(pairs.mated.sum()),
        "loss_variants": len(scorer.loss_variants), "columns": len(columns), "seconds_total": time.perf_counter() - started,
        **{f"seconds_{k}": v for k, v in seconds.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    run_dir = log_to_wandb(config, header, rows, plots, summary, out)
    print(f"{summary['columns']} columns from {summary['loss_variants']} loss variants in {summary['seconds_total']:.0f} s "
          f"(activation pass {seconds['activation_pass']:.0f} s, weight pass {seconds['parameter_pass']:.0f} s)")
    return {"table": csv_path, "markdown": md_path, "plots": plots, "rows": rows, "header": header,
            "wandb_dir": run_dir, "summary": summary}


def write_columns(path: Path, data: AblationData, columns: dict[str, np.ndarray]) -> None:
    from grafiqs.data.score_files import write_csv

    labels = ["degradation", "severity"] if data.severity is not None else []
    rows = ([data.vset.names[i], *((data.degradation[i], int(data.severity[i])) if labels else ()),
             *(float(v[i]) for v in columns.values())] for i in range(data.vset.num_images))
    write_csv(path, ["image", *labels, *columns], rows)


def log_to_wandb(config: dict, header, rows, plots, summary: dict, out: Path) -> Path | None:
    """A W&B run with the config, one summary metric per variant, the table and the plots; offline by default."""
    settings = dict(config.get("wandb") or {})
    if settings.get("mode", "offline") == "disabled":
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=settings.get("project", "grafiqs"), name=settings.get("name", config.get("name")),
                     mode=settings.get("mode", "offline"), dir=str(out), config=config, job_type="ablation",
                     reinit="finish_previous")
    key = next(i for i, h in enumerate(header) if h.startswith("pauc_norm"))
    for row in rows:
        run.summary[f"{header[key]}/{row[0]}"] = row[key]
    run.summary.update(summary)
    table = wandb.Table(columns=list(header), data=[[row[0], *(None if isinstance(v, float) and math.isnan(v) else v for v in row[1:])] for row in rows])
    run.log({"results": table, **{Path(p).stem: wandb.Image(str(p)) for p in plots}})
    run_dir = Path(run.dir).parent
    run.finish()
    return run_dir
