"""The field's comparison table in one command: FIQA methods x evaluation sets x FR models.

    python benchmark.py --config configs/benchmark/synthetic.yaml

Steps: (1) every evaluation set is loaded (insightface .bin, LFW pairs.txt, XQLFW, CR-FIQA
pair_list, an identity-labelled folder's all-vs-all pairs, IJB-C 1:1 templates, synthetic
sets); (2) per set, cached passes (grafiqs.experiments.passes) compute the embeddings of each
FR model that judges the pairs and, on the quality model, the GraFIQs variant grid and each
baseline FIQA method; other methods' score files are read as they are; (3) per FR model and
set, every method's per-image quality becomes a pair (or template-pair) quality and is
evaluated with the ISO EDC (threshold fixed once at each FMR on all comparisons) beside random
discarding and, for synthetic sets, discarding by known severity; (4) the papers' tables
(method x set + mean, per FR model, FMR and discard limit; CSV, markdown, LaTeX), EDC grids,
one ranked table per set and model, per-image scores and one W&B run (offline by default) go
to the output folder. The ablation runner (ablate.py) is this with one set.

A per-image quality that is NaN (a GraFIQs sample whose gradients were not finite, see the
status column of score.py) counts as the worst quality: such images are discarded first, and
the summary counts them per method and set.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from grafiqs.errors import InputError
from grafiqs.evaluation.edc import Orientation
from grafiqs.quality.baselines import BASELINES, SERFIQ, BNSLoss, EmbeddingNorm, FaceQAN
from grafiqs.synthetic.drawn_set import SyntheticSetSpec

SET_WAIT_SECONDS = 3600
CONFIG_FILE_LIMIT = 64 * 2**20  # bytes of a --config YAML
MOST = 2**16  # the largest count accepted for sizes and processes, as score.py's options


# Every number of the config is checked when its dataclass is made (jsonargparse instantiates them while
# reading the YAML), so a bad value stops the run before anything is created: one line naming the key and
# the accepted range, never a traceback hours later.
def _whole(key: str, value, least: int, most: int | None = MOST) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least or (most is not None and value > most):
        accepted = f"a whole number from {least} to {most}" if most is not None else f"a whole number >= {least}"
        raise InputError(f"{key} must be {accepted}, got {value!r}")


def _fraction(key: str, value, one_allowed: bool = False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and 0 < value and (value <= 1 if one_allowed else value < 1)):
        raise InputError(f"{key} must lie in {'(0, 1]' if one_allowed else '(0, 1)'}, got {value!r}")


def _listed(key: str, values, check) -> None:
    if not values:
        raise InputError(f"{key} is empty; give at least one value")
    for value in values:
        check(key, value)


NEEDED = {"synthetic": (), "bin": ("path",), "lfw": ("pairs", "images"), "xqlfw": ("pairs", "images"),
          "pair_list": ("dir",), "identity_folder": ("folder",), "ijbc": ("meta", "images")}  # keys per set kind


# The config schema: every key at every level is checked by jsonargparse (as LightningCLI checks
# train_fr.py's), so a typo anywhere is an error naming the key.
@dataclass
class SetConfig:
    """One evaluation set, by `kind`:
    synthetic: `synthetic` (what to draw), into `folder` (default <cache_dir>/sets/<name>);
    bin: `path` (insightface lfw.bin, cfp_fp.bin, agedb_30.bin, calfw.bin, cplfw.bin);
    lfw: `pairs` (pairs.txt), `images` (<name>/<name>_<idx:04d>.<extension>);
    xqlfw: `pairs` (xqlfw_pairs.txt), `images` (the aligned 112x112 folder, LFW layout);
    pair_list: `dir` (CR-FIQA: <dir>/images + <dir>/pair_list.txt);
    identity_folder: `folder` (<folder>/<identity>/<image>; all-vs-all pairs as for Adience), `max_pairs`;
    ijbc: `meta` (<target>_face_tid_mid.txt, <target>_template_pair_label.txt and, unless `landmarks` is
    given, <target>_name_5pts_score.txt), `images` (loose_crop/), `target` (IJBC or IJBB)."""

    name: str
    kind: Literal["synthetic", "bin", "lfw", "xqlfw", "pair_list", "identity_folder", "ijbc"]
    synthetic: SyntheticSetSpec = field(default_factory=SyntheticSetSpec)
    folder: Optional[str] = None
    path: Optional[str] = None
    pairs: Optional[str] = None
    images: Optional[str] = None
    extension: str = "jpg"
    dir: Optional[str] = None
    meta: Optional[str] = None
    landmarks: Optional[str] = None
    target: str = "IJBC"
    max_pairs: int = 50_000_000

    def __post_init__(self) -> None:
        from grafiqs.synthetic import DEGRADATIONS
        from grafiqs.synthetic.identities import WORLDS

        missing = [key for key in NEEDED.get(self.kind, ()) if getattr(self, key) is None]
        if missing:
            raise InputError(f"set {self.name}: kind {self.kind} needs {' and '.join(missing)}")
        _whole(f"set {self.name!r}: max_pairs", self.max_pairs, 1, None)
        spec, key = self.synthetic, f"set {self.name!r}: synthetic"
        # two identities at least: a set needs impostor (non-mated) pairs as well as genuine ones
        _whole(f"{key}.num_identities", spec.num_identities, 2, None)
        _whole(f"{key}.probes_per_identity", spec.probes_per_identity, 1)
        _whole(f"{key}.seed", spec.seed, 0, None)
        _whole(f"{key}.identity_offset", spec.identity_offset, 0, None)
        if not spec.kinds or not set(spec.kinds) <= set(DEGRADATIONS):
            raise InputError(f"{key}.kinds must name one or more of {', '.join(DEGRADATIONS)}, got {list(spec.kinds)}")
        if not spec.severities or not set(spec.severities) <= {0, 1, 2, 3}:
            raise InputError(f"{key}.severities must be one or more of 0, 1, 2, 3, got {list(spec.severities)}")
        if spec.world not in WORLDS:
            raise InputError(f"{key}.world must be one of {', '.join(WORLDS)}, got {spec.world!r}")
        weights = spec.severity_weights
        if weights is not None and (len(weights) != len(spec.severities) or not all(w >= 0 for w in weights)
                                    or not sum(weights) > 0):
            raise InputError(f"{key}.severity_weights must give one weight >= 0 per severity {list(spec.severities)}, "
                             f"not all 0; got {list(weights)}")


@dataclass
class FRModelConfig:
    """An FR model (iResNet weights). `judge`: its embeddings judge the pairs (one table per judging model).
    `flip`: also embed the mirrored image and add it (`sum`, as insightface's verification and IJB-C
    evaluation do) or append it (`concat`)."""

    name: str
    weights: str
    backbone: Optional[str] = None
    bgr2rgb: Optional[bool] = None  # default: a checkpoint's recorded colour order, else BGR
    flip: Literal["none", "sum", "concat"] = "none"
    judge: bool = True


@dataclass
class LossGridConfig:
    """A cross product of loss terms, distances and BN layer sets (see grafiqs.quality.discrepancy)."""

    terms: list[str] = field(default_factory=lambda: ["mean+var"])
    distances: list[str] = field(default_factory=lambda: ["mse"])
    layers: list[str] = field(default_factory=lambda: ["all"])


@dataclass
class VariantsConfig:
    """The GraFIQs rows: loss grids (united) x gradient groups x aggregations, plus weight groups."""

    losses: list[LossGridConfig] = field(default_factory=lambda: [LossGridConfig()])
    groups: list[str] = field(default_factory=lambda: ["image", "block1", "block2", "block3", "block4"])
    aggregations: list[str] = field(default_factory=lambda: ["l1"])
    parameter_groups: list[str] = field(default_factory=list)
    parameter_losses: Optional[list[str]] = None  # losses whose weight gradients are taken (default: the official)
    param_chunk_size: int = 8
    both_orientations: bool = True  # the official rows also read as "larger magnitude = better"

    def __post_init__(self) -> None:
        _whole("methods.grafiqs.param_chunk_size", self.param_chunk_size, 1)


@dataclass
class ExternalScoresConfig:
    """Another method's `<path> <score>` file (CR-FIQA / official GraFIQs format) for one set: a row named `name`.
    Entries match the set's images by path or trailing path parts; .bin images are named 000000, 000001, ..."""

    name: str
    set: str
    path: str
    orientation: Orientation


@dataclass
class MethodsConfig:
    """The rows: GraFIQs variants, training-free baselines run on the quality model (`baselines`, with the
    options of SER-FIQ and FaceQAN in their own keys), other methods' score files."""

    grafiqs: Optional[VariantsConfig] = field(default_factory=VariantsConfig)  # null: no GraFIQs rows
    baselines: list[Literal["serfiq", "embedding_norm", "faceqan", "bns_loss"]] = field(default_factory=list)
    serfiq: SERFIQ = field(default_factory=SERFIQ)
    faceqan: FaceQAN = field(default_factory=FaceQAN)
    external: list[ExternalScoresConfig] = field(default_factory=list)
    quality_model: Optional[str] = None  # the models entry the methods run on (default: the first)


@dataclass
class EvaluationConfig:
    fmrs: list[float] = field(default_factory=lambda: [1e-3, 1e-4])
    limits: list[float] = field(default_factory=lambda: [0.2, 0.3])
    metrics: list[Literal["pauc_norm", "pauc_raw", "pauc_minus_best"]] = field(default_factory=lambda: ["pauc_norm"])
    crfiqa_erc: bool = True  # the CR-FIQA-protocol ERC AUC at the first FMR, as a column of the ranked tables
    plot_top: int = 6  # GraFIQs variants (besides the official rows, baselines and references) in the plots

    def __post_init__(self) -> None:
        _listed("evaluation.fmrs", self.fmrs, _fraction)  # a false match rate: 1e-3, not 1e3
        _listed("evaluation.limits", self.limits, lambda key, value: _fraction(key, value, one_allowed=True))
        if not self.metrics:
            raise InputError("evaluation.metrics is empty; give at least one of pauc_norm, pauc_raw, pauc_minus_best")
        _whole("evaluation.plot_top", self.plot_top, 0, None)


@dataclass
class WandbConfig:
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "grafiqs"
    name: Optional[str] = None


@dataclass
class BenchmarkConfig:
    output_dir: str
    sets: list[SetConfig]
    models: list[FRModelConfig]
    name: Optional[str] = None
    methods: MethodsConfig = field(default_factory=MethodsConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    cache_dir: Optional[str] = None  # default <output_dir>/cache; configs that share one share their passes
    accelerator: str = "auto"
    devices: int = 1  # processes (CPU) or GPUs; more than one runs DDP
    num_nodes: int = 1
    batch_size: int = 32
    num_workers: int = 1
    precision: Literal["32", "bf16"] = "32"  # GraFIQs passes: bf16 runs the activation pass under autocast
    compile: bool = False  # GraFIQs passes: torch.compile the network's stages
    seed: int = 0  # the random reference's order
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self) -> None:
        _whole("devices", self.devices, 1)
        _whole("num_nodes", self.num_nodes, 1)
        _whole("batch_size", self.batch_size, 1)
        _whole("num_workers", self.num_workers, 0)
        _whole("seed", self.seed, 0, None)


EXIT_CODES = ("exit codes: 0 done; 2 bad config or input (the config's values and files and each set's pairs are "
              "checked before any pass runs); 4 cannot write (finished passes are kept in the cache: the same command "
              "resumes); 130 Ctrl-C; 143 SIGTERM")


def config_parser(prog: str = "benchmark.py"):
    """`--config FILE` plus every key as an override (`--devices 2`, `--wandb.mode online`)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    class ConfigFile(ActionConfigFile):
        """A --config path must be a regular file (grafiqs.io.reading) before jsonargparse opens it: a FIFO or a
        device such as /dev/zero is refused at once instead of blocking. An inline YAML mapping is read as given."""

        def __call__(self, parser, cfg, values, option_string=None):
            if isinstance(values, (str, os.PathLike)) and (os.path.lexists(values) or not _inline_yaml(values)):
                from grafiqs.io.reading import open_regular

                open_regular(values, "benchmark config", CONFIG_FILE_LIMIT).close()
            super().__call__(parser, cfg, values, option_string)

    parser = ArgumentParser(prog=prog, exit_on_error=False, epilog=EXIT_CODES, description=(
        "Evaluate FIQA methods (GraFIQs variants, SER-FIQ, embedding norm, FaceQAN, BNS loss, other methods' score "
        "files) on evaluation sets (insightface .bin, LFW, XQLFW, CR-FIQA pair lists, identity folders, IJB-C, "
        "synthetic) with one or more FR models, as FIQA papers do: EDC/pAUC (ISO/IEC 29794-1) tables per FR model "
        "(CSV, markdown, LaTeX), EDC grids and a W&B run. Passes are cached and resumable."))
    parser.add_argument("--config", action=ConfigFile, help="YAML file, e.g. configs/benchmark/synthetic.yaml")
    parser.add_class_arguments(BenchmarkConfig)
    return parser


def _inline_yaml(value) -> bool:
    """Whether a --config value is a YAML mapping given inline (`--config '{devices: 2}'`) rather than a path."""
    import yaml

    try:
        return isinstance(yaml.safe_load(str(value)), dict)
    except yaml.YAMLError:
        return False


def load_config(path: str | Path | None = None, overrides: list[str] = (), prog: str = "benchmark.py") -> BenchmarkConfig:
    """The config of YAML `path` with command-line `overrides` (e.g. ["--devices", "2"]), schema-checked."""
    from jsonargparse import ArgumentError

    parser = config_parser(prog)  # its --config action checks the file (regular, size) before it is read
    try:
        namespace = parser.parse_args([*(["--config", str(path)] if path is not None else []), *overrides])
    except ArgumentError as error:
        message = " ".join(str(error).split())
        raise InputError(f"{path or 'benchmark config'}: {message}") from None
    try:  # makes the config dataclasses, whose __post_init__ checks every number
        instantiated = parser.instantiate(namespace)
    except (TypeError, ValueError) as error:  # jsonargparse wraps a check of an Optional section in a union error
        raise _reported(error, path) from None
    config = BenchmarkConfig(**{f.name: instantiated[f.name] for f in dataclasses.fields(BenchmarkConfig)})
    _check_names(config)
    return config


def _reported(error: BaseException, path) -> InputError:
    """The config check's own InputError behind a jsonargparse error, else that error as one line."""
    cause = error
    while cause is not None and not isinstance(cause, InputError):
        cause = cause.__cause__ or cause.__context__
    return cause or InputError(f"{path or 'benchmark config'}: {' '.join(str(error).split())}")


def _check_names(config: BenchmarkConfig) -> None:
    """Names that the rows, files and passes are keyed by must be unique and must exist."""
    from grafiqs.io.score_files import safe_file_name

    for what, names in (("sets", [s.name for s in config.sets]), ("models", [m.name for m in config.models])):
        as_files = [safe_file_name(n) for n in names]
        repeated = sorted({n for n, f in zip(names, as_files) if as_files.count(f) > 1})
        if repeated:
            raise InputError(f"{what}: the name {repeated[0]!r} is given twice or spelt like another (names become file "
                             "names with characters other than A-Z a-z 0-9 . _ - as _); names key the tables and the cache")
        hidden = [n for n, f in zip(names, as_files) if f.startswith(".")]
        if hidden:
            raise InputError(f"{what}: the name {hidden[0]!r} starts with a dot; names become folder names in the cache")
    if not config.sets or not config.models:
        raise InputError("give at least one entry in sets and one in models")
    if not any(m.judge for m in config.models):
        raise InputError("no model has judge: true; at least one FR model must judge the pairs")
    models, sets = {m.name for m in config.models}, {s.name for s in config.sets}
    quality = config.methods.quality_model
    if quality is not None and quality not in models:
        raise InputError(f"methods.quality_model {quality!r} is not one of the models ({', '.join(sorted(models))})")
    taken = {method.label for method in BASELINES.values()}
    seen = set()
    for external in config.methods.external:
        if external.set not in sets:
            raise InputError(f"methods.external {external.name!r}: set {external.set!r} is not one of the sets "
                             f"({', '.join(sorted(sets))})")
        if external.name in taken or external.name.startswith(("GraFIQs", "reference:")) or (external.set, external.name) in seen:
            raise InputError(f"methods.external {external.name!r} on set {external.set!r}: the name is another row's; "
                             "rows are named uniquely per set (GraFIQs... and reference:... are the runner's)")
        seen.add((external.set, external.name))


# --------------------------------------------------------------------------- evaluation sets


@dataclass
class EvaluationSet:
    """A set's unique images (`images`: a VerificationSet, possibly without pairs), what is compared
    (`comparisons`: image pairs or IJB-C template pairs) and what its passes' numbers depend on."""

    name: str
    images: object
    comparisons: object  # .mated, .similarity(embeddings), .quality(per_image, orientation)
    fingerprint: dict
    severity: np.ndarray | None = None
    degradation: list[str] | None = None
    aligner: object = None

    @property
    def image_names(self) -> list[str]:
        """What other methods' score files are matched against: paths, or .bin indices."""
        return self.images.paths or list(self.images.names)


def load_set(spec: SetConfig, cache_dir: Path) -> EvaluationSet:
    from grafiqs.data import verification as v
    from grafiqs.io.reading import file_digest
    from grafiqs.evaluation.report import PairSet

    if spec.kind == "synthetic":
        eset = _synthetic_set(spec, cache_dir)
        return _checked(eset, Path(eset.images.source) / "manifest.csv")
    if spec.kind == "ijbc":
        from grafiqs.data.ijbc import PAIRS_FILE

        return _checked(_ijbc_set(spec), Path(spec.meta) / PAIRS_FILE.format(target=spec.target.lower()))
    if spec.kind == "bin":
        vset = v.load_bin_pairs(spec.path)
        fingerprint = {"kind": "bin", "sha256": file_digest(spec.path)}
    else:
        vset = {"lfw": lambda: v.load_lfw_pairs(spec.pairs, spec.images, spec.extension),
                "xqlfw": lambda: v.load_xqlfw_pairs(spec.pairs, spec.images, spec.extension),
                "pair_list": lambda: v.load_pair_list(spec.dir),
                "identity_folder": lambda: v.identity_folder_pairs(spec.folder, max_pairs=spec.max_pairs)}[spec.kind]()
        fingerprint = {"kind": "files", "files": _files_digest(vset.paths)}
    comparisons = PairSet(vset.pairs[:, 0], vset.pairs[:, 1], vset.issame)
    return _checked(EvaluationSet(spec.name, vset, comparisons, fingerprint), pair_source(spec))


def pair_source(spec: SetConfig) -> str:
    """The file (or folder) a set's genuine and impostor pairs come from, for messages."""
    return {"bin": spec.path, "lfw": spec.pairs, "xqlfw": spec.pairs, "identity_folder": f"the folder {spec.folder}",
            "pair_list": spec.dir and str(Path(spec.dir) / "pair_list.txt")}.get(spec.kind, spec.kind)


def _checked(eset: EvaluationSet, source) -> EvaluationSet:
    """The set, if it has genuine and impostor comparisons: the EDC sets its threshold at each FMR on the impostor
    scores and measures the FNMR on the genuine ones. Checked when the set is loaded, before any pass runs."""
    mated = np.asarray(eset.comparisons.mated, bool)
    genuine = int(mated.sum())
    impostor = mated.size - genuine
    if not genuine or not impostor:
        lacking = "no pairs at all" if not mated.size else "no impostor pairs" if genuine else "no genuine pairs"
        raise InputError(f"set {eset.name}: {source} has {lacking} ({genuine} genuine, {impostor} impostor); the EDC "
                         "needs both: its threshold is set at each FMR on the impostor comparisons and the FNMR is "
                         "measured on the genuine ones")
    return eset


def _files_digest(paths: list[str]) -> str:
    """Digest of the images' names, sizes and modification times: replaced images make new passes."""
    import hashlib

    from grafiqs.data.folders import file_identity

    digest = hashlib.sha256()
    for path in paths:  # the identity score.py's resume checks per file: [size, mtime]
        digest.update(f"{path}\0{file_identity(os.stat(path))}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _synthetic_set(spec: SetConfig, cache_dir: Path) -> EvaluationSet:
    from grafiqs.io.ledger import is_primary_process
    from grafiqs.data.verification import VerificationSet
    from grafiqs.synthetic.drawn_set import prepare_synthetic_set, read_labels, synthetic_set_ready

    folder = Path(spec.folder or cache_dir / "sets" / spec.name)
    if is_primary_process():
        prepare_synthetic_set(folder, spec.synthetic)
    else:  # Lightning starts its workers after rank 0 has drawn every set; torchrun or SLURM start them at once
        deadline = time.monotonic() + SET_WAIT_SECONDS
        while not synthetic_set_ready(folder, spec.synthetic):
            if time.monotonic() > deadline:
                raise InputError(f"set {spec.name}: rank 0 has not drawn {folder} within {SET_WAIT_SECONDS} s; is "
                                 "cache_dir on a file system every node shares?")
            time.sleep(1)
    labels = read_labels(folder)
    names = list(labels.rows)
    paths = [str(folder / n) for n in names]
    pairs = labels.pairs()
    vset = VerificationSet(str(folder), paths, np.stack([pairs.first, pairs.second], 1), pairs.mated, names)
    return EvaluationSet(spec.name, vset, pairs, {"kind": "files", "files": _files_digest(paths)},
                         labels.severity, labels.degradation)


def landmark_file(spec: SetConfig) -> str:
    return spec.landmarks or str(Path(spec.meta) / f"{spec.target.lower()}_name_5pts_score.txt")


def _ijbc_set(spec: SetConfig) -> EvaluationSet:
    from grafiqs.faces.align import FaceAligner, read_landmarks_file
    from grafiqs.data.ijbc import TemplatePairSet, ijbc_images, load_ijbc_protocol
    from grafiqs.io.reading import file_digest
    from grafiqs.data.verification import VerificationSet

    protocol = load_ijbc_protocol(spec.meta, spec.target)
    paths = ijbc_images(protocol, spec.images)
    landmarks = landmark_file(spec)
    if not os.path.lexists(landmarks):
        raise InputError(f"set {spec.name}: landmark file {landmarks} not found; IJB-C images are aligned from "
                         "ijbc_name_5pts_score.txt (give its path as landmarks)")
    aligner = FaceAligner(read_landmarks_file(landmarks), detect=False)
    images = VerificationSet(spec.images, paths, np.zeros((0, 2), np.int64), np.zeros(0, bool), list(protocol.names))
    fingerprint = {"kind": "ijbc", "files": _files_digest(paths), "landmarks_sha256": file_digest(landmarks)}
    return EvaluationSet(spec.name, images, TemplatePairSet(protocol), fingerprint, aligner=aligner)


# --------------------------------------------------------------------------- models and passes


@dataclass
class FRModel:
    name: str
    network: object
    rgb: bool
    flip: str
    judge: bool
    fingerprint: dict


def load_model(spec: FRModelConfig) -> FRModel:
    from grafiqs.io.reading import file_digest
    from grafiqs.models.loading import load_backbone_and_metadata

    network, metadata = load_backbone_and_metadata(spec.backbone, spec.weights)
    rgb = spec.bgr2rgb if spec.bgr2rgb is not None else metadata is not None and metadata["colour_order"] == "rgb"
    fingerprint = {"weights_sha256": file_digest(spec.weights), "rgb": bool(rgb),
                   "architecture": list(network.layers_per_stage) + list(network.widths)}
    return FRModel(spec.name, network.eval(), bool(rgb), spec.flip, spec.judge, fingerprint)


class EmbeddingPass:
    """An FR model's embeddings, optionally with the mirrored image's added (`sum`) or appended (`concat`)."""

    def __init__(self, network, flip: str):
        self.network, self.flip = network, flip

    def __call__(self, images):
        import torch

        with torch.no_grad():
            embedding = self.network(images).float()
            if self.flip != "none":
                mirrored = self.network(images.flip(-1)).float()
                embedding = embedding + mirrored if self.flip == "sum" else torch.cat([embedding, mirrored], dim=1)
        return {"embedding": embedding}


class VariantPass:
    """Every column of the GraFIQs variant grid, and the per-sample status."""

    def __init__(self, scorer):
        self.scorer = scorer

    def __call__(self, images):
        result = self.scorer(images)
        return {**result.columns, "status": result.status.float()}


class BaselinePass:
    def __init__(self, method, network):
        self.method, self.network = method, network

    def __call__(self, images):
        return {"quality": self.method(self.network, images)}


def build_scorer(network, variants: VariantsConfig, precision: str = "32", compile: bool = False):
    """VariantScorer from the `methods.grafiqs` section: loss grids x groups x aggregations (+ weight groups)."""
    from grafiqs.quality.discrepancy import OFFICIAL_LOSS, parse_loss_variant
    from grafiqs.quality.groups import VariantScorer, loss_grid

    losses = [loss for grid in variants.losses for loss in loss_grid(grid.terms, grid.distances, grid.layers)]
    named = variants.parameter_losses
    return VariantScorer(
        network, losses, groups=variants.groups + variants.parameter_groups, aggregations=variants.aggregations,
        param_chunk_size=variants.param_chunk_size,
        parameter_losses=[parse_loss_variant(t) for t in named] if named is not None else [OFFICIAL_LOSS],
        precision=precision, compile=compile)


def baselines_of(methods: MethodsConfig) -> list:
    """The listed baselines with their options, each once."""
    chosen = {"serfiq": methods.serfiq, "faceqan": methods.faceqan, "embedding_norm": EmbeddingNorm(), "bns_loss": BNSLoss()}
    return [chosen[name] for name in dict.fromkeys(methods.baselines)]


# --------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One FIQA method's per-image values on one set; `kind` decides how it is shown."""

    name: str
    values: np.ndarray
    orientation: str
    kind: Literal["external", "baseline", "grafiqs", "reading", "variant"]  # reading: an official row read the other way


def grafiqs_rows(columns: dict[str, np.ndarray], variants: VariantsConfig) -> list[Row]:
    """The official GraFIQs columns named as in papers (in both readings if asked), then every other variant."""
    from grafiqs.quality.discrepancy import OFFICIAL_LOSS
    from grafiqs.quality.groups import Variant, loss_column

    official = {Variant(OFFICIAL_LOSS, g, "l1").name: g for g in variants.groups if "l1" in variants.aggregations}
    rows, others = [], []
    for name, values in columns.items():
        if name == "status":
            continue
        if name in official:  # larger magnitude = lower quality: the project's documented reading
            rows.append(Row(f"GraFIQs {official[name]}", values, "lower_is_better", "grafiqs"))
            if variants.both_orientations:
                rows.append(Row(f"GraFIQs {official[name]} (larger = better)", values, "higher_is_better", "reading"))
        elif name == loss_column(OFFICIAL_LOSS):
            rows.append(Row("GraFIQs BNS loss", values, "lower_is_better", "grafiqs"))
        else:
            others.append(Row(name, values, "lower_is_better", "variant"))  # magnitudes and losses: larger = worse
    return rows + others


# --------------------------------------------------------------------------- the run


def input_files(config: BenchmarkConfig) -> list[tuple[str, str]]:
    """(path, what) of every file the config names: weights, pair lists, protocol and landmark files, score files."""
    from grafiqs.data.ijbc import FACES_FILE, PAIRS_FILE

    files = [(m.weights, f"weights file of model {m.name}") for m in config.models]
    for spec in config.sets:  # the keys each kind needs are given: SetConfig checks them
        if spec.kind == "bin":
            named = [(spec.path, ".bin pair file")]
        elif spec.kind in ("lfw", "xqlfw"):
            named = [(spec.pairs, "pairs file")]
        elif spec.kind == "pair_list":
            named = [(str(Path(spec.dir) / "pair_list.txt"), "pair_list.txt")]
        elif spec.kind == "ijbc":
            named = [(str(Path(spec.meta) / name.format(target=spec.target.lower())), "IJB-C protocol file")
                     for name in (FACES_FILE, PAIRS_FILE)] + [(landmark_file(spec), "landmarks file")]
        else:  # synthetic (drawn by the program), identity_folder (images only)
            named = []
        files += [(path, f"{what} of set {spec.name}") for path, what in named]
    files += [(e.path, f"score file of {e.name} on set {e.set}") for e in config.methods.external]
    return files


def check_inputs(config: BenchmarkConfig) -> None:
    """Every file the config names is a regular file (grafiqs.io.reading: a FIFO or /dev/zero is refused at once,
    a missing file named), checked before anything is created or run; the readers check again when they read."""
    from grafiqs.io.reading import open_regular

    for path, what in input_files(config):
        open_regular(path, what, limit=None).close()


def output_names(config: BenchmarkConfig) -> set[str]:
    """The files a run writes into output_dir (entered in its ledger before anything is written)."""
    from grafiqs.evaluation.tables import comparison_table_names
    from grafiqs.experiments.benchmark_report import edc_grid_name, ranked_stem, scores_name

    judges = [m.name for m in config.models if m.judge]
    fmrs, limits = config.evaluation.fmrs, config.evaluation.limits
    names = {"summary.json", "tables.md", "tables.tex", "results_long.csv"}
    names |= comparison_table_names(judges, fmrs, limits, config.evaluation.metrics)
    for model in judges:
        names |= {edc_grid_name(model, fmr) for fmr in fmrs}
        names |= {f"{ranked_stem(s.name, model)}.{ext}" for s in config.sets for ext in ("csv", "md")}
    return names | {scores_name(s.name) for s in config.sets}


def run_benchmark(config: BenchmarkConfig) -> dict | None:
    """Run every pass (cached), evaluate, write the report; returns what was written (None on DDP workers)."""
    from grafiqs.io.ledger import OutputFolder, is_primary_process

    started = time.perf_counter()
    out = Path(config.output_dir)
    cache_dir = Path(config.cache_dir or out / "cache")
    primary = is_primary_process()
    output, written = OutputFolder(out, "output_dir"), output_names(config)
    if primary:
        output.check(written)  # creates nothing: a foreign file there is named before any set is read
    check_inputs(config)
    kept = f"finished passes are kept in {cache_dir}"
    sets = []
    for spec in config.sets:  # each set is checked as it is loaded: genuine and impostor pairs
        with _writing(config, kept) if spec.kind == "synthetic" else contextlib.nullcontext():  # drawn into the cache
            sets.append(load_set(spec, cache_dir))
    if primary:
        with _writing(config, "no pass has run yet", resumes=False):
            output.claim(written)
    from grafiqs.experiments.passes import PassRunner, PassSpec  # Lightning: imported once the input is known good
    # other methods' score files are read before any pass runs: a missing entry must not wait for hours of scoring
    external = {eset.name: external_rows(config, eset) for eset in sets} if primary else {}
    models = {spec.name: load_model(spec) for spec in config.models}
    quality_model = models[config.methods.quality_model or config.models[0].name]
    runner = PassRunner(cache_dir, config.accelerator, config.devices, config.num_nodes, config.batch_size,
                        config.num_workers)
    grafiqs, baselines = config.methods.grafiqs, baselines_of(config.methods)
    if primary:
        print(f"benchmark {config.name or out.name}: {len(sets)} sets, {sum(m.judge for m in models.values())} judging "
              f"FR models, quality model {quality_model.name}", flush=True)

    passes: dict[tuple[str, str, str], dict] = {}  # (set, model, method) -> outputs
    folders: dict[str, str] = {}
    for eset in sets:
        def run(model: FRModel, method: str, compute, **settings):
            spec = PassSpec(eset.name, model.name, method,
                            {"set": eset.fingerprint, "model": model.fingerprint, "method": method, **settings})
            with _writing(config, kept):
                passes[eset.name, model.name, method] = runner(spec, eset.images, model.network, compute, model.rgb,
                                                               eset.aligner)
            folders[f"{eset.name}/{model.name}/{method}"] = str(spec.folder(cache_dir))

        for model in models.values():
            if model.judge:
                run(model, "embedding", EmbeddingPass(model.network, model.flip), flip=model.flip)
        if grafiqs is not None:
            scorer = build_scorer(quality_model.network, grafiqs, config.precision, config.compile)
            variant_settings = {k: v for k, v in dataclasses.asdict(grafiqs).items() if k != "both_orientations"}
            run(quality_model, "grafiqs", VariantPass(scorer), variants=variant_settings, precision=config.precision,
                compile=config.compile)
        for method in baselines:
            run(quality_model, method.name, BaselinePass(method, quality_model.network),
                options=dataclasses.asdict(method))
    if not primary:
        return None
    rows = {eset.name: external[eset.name] + set_rows(config, eset, passes, quality_model.name, baselines)
            for eset in sets}
    from grafiqs.experiments.benchmark_report import evaluate, write_report

    evaluation = evaluate(config, sets, [m for m in models.values() if m.judge], rows, passes)
    from grafiqs.io.atomic import atomic_write_text

    with _writing(config, f"every pass is done and kept in {cache_dir}"):  # read-only folder, full disk, ...
        report = write_report(config, out, sets, rows, evaluation)
        report["summary"]["seconds_total"] = time.perf_counter() - started
        report["summary"]["passes"] = folders  # values.npz and pass.json (seconds) of each pass
        atomic_write_text(out / "summary.json", json.dumps(report["summary"], indent=1, allow_nan=True))
        output.remove(output.written() - written)  # e.g. the tables of a model an earlier run of this folder had
    return report


class CannotWrite(Exception):
    """An output or cache file could not be written (exit 4); the message says where, why and what is kept."""


@contextlib.contextmanager
def _writing(config: BenchmarkConfig, kept: str, resumes: bool = True):
    """Turn an OSError of the writes inside (unwritable or full folder) into CannotWrite, saying what is kept and
    that the same command resumes: the passes are cached by their settings, so a rerun loads them."""
    try:
        yield
    except OSError as error:
        where = error.filename or config.output_dir
        again = "rerun the same command" + (" to resume" if resumes else "")
        if resumes and not config.cache_dir:  # the cache lies in output_dir
            again += f" (with another output_dir, add --cache_dir {Path(config.output_dir) / 'cache'} to reuse the passes)"
        raise CannotWrite(f"cannot write {where}: {error.strerror or error}. {kept[0].upper()}{kept[1:]}; free space or "
                          f"make the folder writable, then {again}") from None


def external_rows(config: BenchmarkConfig, eset: EvaluationSet) -> list[Row]:
    """Other methods' score files for this set, matched to its images."""
    from grafiqs.data.external_scores import read_external_scores

    return [Row(e.name, read_external_scores(e.path, e.orientation, eset.image_names).scores, e.orientation, "external")
            for e in config.methods.external if e.set == eset.name]


def set_rows(config: BenchmarkConfig, eset: EvaluationSet, passes: dict, quality_model: str, baselines: list) -> list[Row]:
    """A set's rows from its passes: the baselines, then the GraFIQs columns."""
    rows = [Row(method.label, passes[eset.name, quality_model, method.name]["quality"], method.orientation, "baseline")
            for method in baselines]
    if config.methods.grafiqs is not None:
        rows += grafiqs_rows(passes[eset.name, quality_model, "grafiqs"], config.methods.grafiqs)
    return rows


def main(argv: list[str] | None = None, prog: str = "benchmark.py") -> int:
    from grafiqs.allocator import retain_freed_memory
    from grafiqs.errors import GrafiqsError, RunInterrupted, report_stop

    retain_freed_memory()  # faster batches on CPU; see grafiqs/allocator.py
    arguments = sys.argv[1:] if argv is None else argv
    try:
        config = load_config(overrides=arguments, prog=prog)
        result = run_benchmark(config)
    except GrafiqsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except CannotWrite as error:
        print(f"error: {error}", file=sys.stderr)
        return 4
    except (KeyboardInterrupt, RunInterrupted) as stop:
        return report_stop(stop, "finished passes and batches are kept in the cache")
    if result is None:  # a DDP worker: rank 0 reports
        return 0
    text = result["markdown"].read_text(encoding="utf-8")
    print(text if len(text) < 12_000 else f"tables: {result['markdown']}")
    print(f"wrote {result['markdown']}, {result['latex']}, {result['long']}, {len(result['plots'])} EDC grids"
          + (f"; W&B run: {result['wandb_dir']}" if result["wandb_dir"] else ""))
    return 0
