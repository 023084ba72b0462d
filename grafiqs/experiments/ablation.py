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

import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from grafiqs.errors import InputError
from grafiqs.experiments.synthetic_set import SyntheticSetSpec


# The config schema: every key at every level is checked by jsonargparse (as LightningCLI checks
# train_fr.py's), so a typo anywhere is an error naming the key.
@dataclass
class DataConfig:
    """Which pairs: `synthetic` (drawn into `folder`, default <output_dir>/images), `bin` (insightface
    .bin at `path`), `lfw` (`pairs` = pairs.txt, `images` folder, `extension`), `pair_list` (CR-FIQA `dir`)."""

    kind: Literal["synthetic", "bin", "lfw", "pair_list"]
    synthetic: SyntheticSetSpec = field(default_factory=SyntheticSetSpec)
    folder: Optional[str] = None
    path: Optional[str] = None
    pairs: Optional[str] = None
    images: Optional[str] = None
    extension: str = "jpg"
    dir: Optional[str] = None


@dataclass
class LossGridConfig:
    """A cross product of loss terms, distances and BN layer sets (see grafiqs.quality.discrepancy)."""

    terms: list[str] = field(default_factory=lambda: ["mean+var"])
    distances: list[str] = field(default_factory=lambda: ["mse"])
    layers: list[str] = field(default_factory=lambda: ["all"])


@dataclass
class VariantsConfig:
    losses: list[LossGridConfig] = field(default_factory=lambda: [LossGridConfig()])  # united
    groups: list[str] = field(default_factory=lambda: ["image", "block1", "block2", "block3", "block4"])
    aggregations: list[str] = field(default_factory=lambda: ["l1"])
    parameter_groups: list[str] = field(default_factory=list)
    parameter_losses: Optional[list[str]] = None  # losses whose weight gradients are taken (default: the official)
    param_chunk_size: int = 8


@dataclass
class EvaluationConfig:
    fmrs: list[float] = field(default_factory=lambda: [1e-3, 1e-4])
    limits: list[float] = field(default_factory=lambda: [0.2, 0.3])
    crfiqa_erc: bool = True  # adds the CR-FIQA-protocol ERC AUC as a column
    plot_top: int = 6


@dataclass
class ModelConfig:
    weights: str
    backbone: Optional[str] = None
    bgr2rgb: Optional[bool] = None  # default: a checkpoint's recorded colour order, else BGR


@dataclass
class WandbConfig:
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "grafiqs"
    name: Optional[str] = None


@dataclass
class AblationConfig:
    output_dir: str
    weights: str
    data: DataConfig
    name: Optional[str] = None
    backbone: Optional[str] = None
    bgr2rgb: Optional[bool] = None
    variants: VariantsConfig = field(default_factory=VariantsConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    comparison_model: Optional[ModelConfig] = None  # cross-model: its embeddings judge the pairs
    batch_size: int = 32
    num_workers: int = 1
    precision: Literal["32", "bf16"] = "32"  # bf16: the activation pass under bfloat16 autocast (as score.py's)
    compile: bool = False  # torch.compile the activation pass's stages (as score.py --compile on)
    seed: int = 0
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class AblationData:
    vset: object  # grafiqs.data.verification.VerificationSet
    severity: np.ndarray | None  # per image, synthetic sets only
    degradation: list[str] | None


def config_parser():
    """ablate.py's parser: `--config FILE` plus every key as an override (`--data.kind bin`, `--wandb.mode online`)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="ablate.py", exit_on_error=False, description=(
        "Score every variant of a YAML ablation grid (loss terms, distance, BN layers, gradient groups, aggregation) "
        "on a verification pair set, evaluate each with EDC/pAUC (ISO/IEC 29794-1) beside random and known-severity "
        "discarding, and write a ranked table (results.csv/.md), EDC plots and a W&B run."))
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file, e.g. configs/ablation/synthetic.yaml")
    parser.add_class_arguments(AblationConfig)
    return parser


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> AblationConfig:
    """The config of YAML `path` with command-line `overrides` (e.g. ["--weights", "b.pth"]), schema-checked."""
    from jsonargparse import ArgumentError

    if path is not None and not Path(path).is_file():
        raise InputError(f"ablation config not found: {path}")
    parser = config_parser()
    try:
        namespace = parser.parse_args([*(["--config", str(path)] if path is not None else []), *overrides])
    except ArgumentError as error:
        message = " ".join(str(error).split())
        raise InputError(f"{path or 'ablation config'}: {message}") from None
    instantiated = parser.instantiate(namespace)
    return AblationConfig(**{f.name: instantiated[f.name] for f in dataclasses.fields(AblationConfig)})


def load_data(config: AblationConfig) -> AblationData:
    from grafiqs.data.verification import VerificationSet, load_bin_pairs, load_lfw_pairs, load_pair_list
    from grafiqs.experiments.synthetic_set import prepare_synthetic_set, read_labels

    data = config.data
    if data.kind == "synthetic":
        folder = Path(data.folder or Path(config.output_dir) / "images")
        prepare_synthetic_set(folder, data.synthetic)
        labels = read_labels(folder)
        names = list(labels.rows)
        pairs = labels.pairs()
        vset = VerificationSet(str(folder), [str(folder / n) for n in names], np.stack([pairs.first, pairs.second], 1),
                               pairs.mated, names)
        return AblationData(vset, labels.severity, labels.degradation)
    needed = {"bin": ("path",), "lfw": ("pairs", "images"), "pair_list": ("dir",)}[data.kind]
    missing = [key for key in needed if getattr(data, key) is None]
    if missing:
        raise InputError(f"data.kind={data.kind} needs data.{' and data.'.join(missing)}")
    if data.kind == "bin":
        vset = load_bin_pairs(data.path)
    elif data.kind == "lfw":
        vset = load_lfw_pairs(data.pairs, data.images, data.extension)
    else:
        vset = load_pair_list(data.dir)
    return AblationData(vset, None, None)


def build_scorer(model, variants: VariantsConfig, precision: str = "32", compile: bool = False):
    """VariantScorer from the `variants` section: loss grids x groups x aggregations (+ weight groups)."""
    from grafiqs.quality.discrepancy import OFFICIAL_LOSS, parse_loss_variant
    from grafiqs.quality.groups import VariantScorer, loss_grid

    losses = [loss for grid in variants.losses for loss in loss_grid(grid.terms, grid.distances, grid.layers)]
    named = variants.parameter_losses
    return VariantScorer(
        model, losses,
        groups=variants.groups + variants.parameter_groups,
        aggregations=variants.aggregations,
        param_chunk_size=variants.param_chunk_size,
        parameter_losses=[parse_loss_variant(t) for t in named] if named is not None else [OFFICIAL_LOSS],
        precision=precision,
        compile=compile,
    )


def score_variants(config: AblationConfig, data: AblationData, model, bgr2rgb: bool):
    """Every column for every image, the embeddings that judge the pairs, and the time per pass."""
    import lightning as L
    from torch.utils.data import DataLoader

    from grafiqs.data.verification import VerificationImages
    from grafiqs.lit.quality_module import VariantModule

    scorer = build_scorer(model, config.variants, config.precision, config.compile)
    comparison, swap = None, False
    if config.comparison_model is not None:
        comparison, comparison_rgb = load_model(config.comparison_model)
        swap = comparison_rgb != bgr2rgb
    loader = DataLoader(VerificationImages(data.vset, bgr2rgb=bgr2rgb), batch_size=config.batch_size,
                        num_workers=config.num_workers)
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


def load_model(section: ModelConfig):
    """(eval backbone, feeds RGB?); a checkpoint's recorded colour order is the default."""
    from grafiqs.models.loading import load_backbone_and_metadata

    model, metadata = load_backbone_and_metadata(section.backbone, section.weights)
    rgb = section.bgr2rgb
    if rgb is None:
        rgb = metadata is not None and metadata["colour_order"] == "rgb"
    return model, bool(rgb)


def output_names(config: AblationConfig) -> set[str]:
    """The files a run writes into output_dir."""
    plots = {f"edc_fmr{fmr:g}.png" for fmr in config.evaluation.fmrs}
    return plots | {"results.csv", "results.md", "scores.csv", "embeddings.npy", "summary.json"}


def run_ablation(config: AblationConfig) -> dict:
    """Run the experiment; returns paths of what it wrote and the ranked rows."""
    from grafiqs.data.output_folder import OutputFolder
    from grafiqs.data.score_files import atomic_write_npy, atomic_write_text
    from grafiqs.evaluation.edc import crfiqa_erc
    from grafiqs.evaluation.report import REFERENCES, PairSet, evaluate_orders, plot_edcs, table_rows, write_table
    from grafiqs.quality.groups import Variant

    started = time.perf_counter()
    out = Path(config.output_dir)
    OutputFolder(out, "output_dir").claim(output_names(config))
    evaluation = config.evaluation
    fmrs, limits = evaluation.fmrs, evaluation.limits
    experiment = config.name or out.name

    data = load_data(config)
    model, rgb = load_model(ModelConfig(config.weights, config.backbone, config.bgr2rgb))
    print(f"ablation {experiment}: {data.vset.num_images} images, {len(data.vset)} pairs", flush=True)
    columns, embeddings, seconds, scorer = score_variants(config, data, model, rgb)

    pairs = PairSet(data.vset.pairs[:, 0], data.vset.pairs[:, 1], data.vset.issame)
    similarity = pairs.similarity(embeddings)
    orders = {name: (values, "lower_is_better") for name, values in columns.items()}  # larger = worse, bns_loss too
    results = evaluate_orders(similarity, pairs, orders, fmrs, severity=data.severity, seed=config.seed)
    if evaluation.crfiqa_erc:
        for result in results:
            values = columns.get(result.name)
            if values is not None:
                erc = crfiqa_erc(similarity, pairs.mated, pairs.quality(values, "lower_is_better"), fmr=fmrs[0])
                result.extra[f"erc_auc_crfiqa@fmr{fmrs[0]:g}"] = erc.auc
    header, rows = table_rows(results, fmrs, limits)
    csv_path, md_path = write_table(header, rows, out, stem="results")
    plots = []
    official = Variant().name  # the official GraFIQs score: MSE of mean and variance, all layers, image, L1
    top = [r for r in rows if r[0] not in REFERENCES][: evaluation.plot_top]
    shown = {r[0] for r in top} | {official} | set(REFERENCES)
    for fmr in fmrs:
        plots.append(plot_edcs([r for r in results if r.name in shown], fmr, out / f"edc_fmr{fmr:g}.png", limit=limits[-1],
                               title=f"{experiment}: best variants, official GraFIQs and references"))
    write_columns(out / "scores.csv", data, columns)
    atomic_write_npy(out / "embeddings.npy", embeddings)
    summary = {
        "images": data.vset.num_images, "pairs": len(data.vset), "mated": int(pairs.mated.sum()),
        "loss_variants": len(scorer.loss_variants), "columns": len(columns), "seconds_total": time.perf_counter() - started,
        **{f"seconds_{k}": v for k, v in seconds.items()},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
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


def log_to_wandb(config: AblationConfig, header, rows, plots, summary: dict, out: Path) -> Path | None:
    """A W&B run with the config, one summary metric per variant, the table and the plots; offline by default."""
    settings = config.wandb
    if settings.mode == "disabled":
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=settings.project, name=settings.name or config.name, mode=settings.mode, dir=str(out),
                     config=dataclasses.asdict(config), job_type="ablation", reinit="finish_previous")
    key = next(i for i, h in enumerate(header) if h.startswith("pauc_norm"))
    for row in rows:
        run.summary[f"{header[key]}/{row[0]}"] = row[key]
    run.summary.update(summary)
    table = wandb.Table(columns=list(header), data=[[row[0], *(None if isinstance(v, float) and math.isnan(v) else v for v in row[1:])] for row in rows])
    run.log({"results": table, **{Path(p).stem: wandb.Image(str(p)) for p in plots}})
    run_dir = Path(run.dir).parent
    run.finish()
    return run_dir
