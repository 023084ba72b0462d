#!/usr/bin/env python
"""Train a face-recognition iResNet for GraFIQs: `python train_fr.py fit --config configs/train_fr/<name>.yaml`.

A LightningCLI over `FaceRecognitionModule` and any `FaceDataModule` subclass
(`SyntheticFacesDataModule`, `ImageFolderDataModule`, `RecordIODataModule`, chosen with
`data.class_path`). `num_classes` and `colour_order` are not configured on the model: they
are taken from the instantiated datamodule, so the classifier always matches the data and
the checkpoint records the channel order the network was really trained on.

Override anything from the command line, e.g. `--trainer.max_steps 30` or
`--data.init_args.num_workers 0`; `python train_fr.py fit --help` lists every option and
`--print_config` shows the resolved configuration.

Resume with `--ckpt_path <checkpoint>` (e.g. the `last.ckpt` the configs write every N steps,
every 30 minutes and, through `EpochEndLastCheckpoint`, at every epoch's end and the end of fit):
the model's hyper-parameters come from the checkpoint, the trainer and data settings from the
command line, so `--trainer.max_steps`/`max_epochs` may be raised and the LR schedule follows the
new length. The checkpoint is checked before anything runs: a missing, truncated or special file,
a plain state dict, weights without training state, another network than the configured one,
another class count or channel order are refused in one line. The loggers continue the
checkpoint's runs (same W&B run id) unless a `version`/`id` is given. The whole resolved
configuration (trainer, data, model, callbacks) is sent to every logger and written to the log
folder as `config.yaml`, or as `config-1.yaml`, ... when a `config.yaml` there is not one this
program wrote. The exported `backbone.pth`, `backbone.ckpt` and `grafiqs.ckpt` never replace
files the program did not write (`ExportBackbone` claims its folder when fit starts), and neither do
the checkpoints (`LedgeredCheckpoints`: someone else's `last.ckpt` in a ModelCheckpoint folder refuses
the run before anything is created; the `--ckpt_path` checkpoint is adopted and replaced by its continuation).

Bad input (a typo'd option, a corrupt `.bin` validation set, a missing data folder, a foreign
checkpoint, someone else's file where the export goes, ...) ends with one `error: ...` line on
stderr and exit status 2.
"""
import os
import pickle
import sys
from argparse import ArgumentError
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from jsonargparse import ActionConfigFile  # noqa: E402
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback  # noqa: E402

from grafiqs.allocator import retain_freed_memory  # noqa: E402
from grafiqs.errors import GrafiqsError, InputError  # noqa: E402
from grafiqs.io.atomic import atomic_write_text  # noqa: E402
from grafiqs.io.ledger import OutputFolder  # noqa: E402
from grafiqs.io.reading import TEXT_FILE_LIMIT, open_regular  # noqa: E402
from grafiqs.lit.callbacks import EpochEndLastCheckpoint, LedgeredCheckpoints, on_rank_zero_for_all  # noqa: E402
from grafiqs.lit.datamodules import FaceDataModule  # noqa: E402
from grafiqs.lit.fr_module import RUN_KEY, FaceRecognitionModule  # noqa: E402
from grafiqs.models.iresnet import ARCHITECTURES, DEFAULT_WIDTHS  # noqa: E402
from grafiqs.models.loading import METADATA_KEY, describe_architecture  # noqa: E402

CKPT = "--ckpt_path"
HELP_HINT = "`python train_fr.py fit --help` lists every option"
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc")  # --ckpt_path values Lightning resolves itself
TRAINING_STATE = ("pytorch-lightning_version", "loops", "optimizer_states", "lr_schedulers")
MODULE_PATH = f"{FaceRecognitionModule.__module__}.{FaceRecognitionModule.__qualname__}"


# --------------------------------------------------------------------------- the files it reads


class CheckedConfigFile(ActionConfigFile):
    """`--config`: a path goes through the regular-file check of every read before jsonargparse opens it,
    so a FIFO, a device or a folder is refused at once instead of blocking the parser. Inline YAML and
    missing files are left to jsonargparse (which says "File does not exist")."""

    def __call__(self, parser, cfg, values, option_string=None):
        try:
            exists = isinstance(values, (str, os.PathLike)) and os.path.lexists(values)
        except (OSError, ValueError):  # inline YAML too long or odd for a file name
            exists = False
        if exists:
            open_regular(values, "--config file", TEXT_FILE_LIMIT).close()
        super().__call__(parser, cfg, values, option_string)


def load_checkpoint_file(path: str) -> object:
    """The content of `path`, opened through the regular-file check (a FIFO never blocks) and unpickled with
    weights_only; every failure is an InputError that names the file."""
    with open_regular(path, f"{CKPT} checkpoint", limit=None) as file:
        try:
            zipped = file.read(4) == b"PK\x03\x04"  # torch.save's zip archive
            file.seek(0)
            return torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise InputError(f"{CKPT} {path} is not a checkpoint of train_fr.py: it holds pickled objects that are not "
                             "tensors or plain containers (refused: unpickling them could run code)") from None
        except Exception as error:  # truncated zip, not a torch file, read error
            reason = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
            what = "is truncated or damaged (its zip archive cannot be read" if zipped else \
                "is not a PyTorch checkpoint (not a torch.save archive"
            raise InputError(f"{CKPT} {path} {what}: {reason})") from None


def network(layers, widths, num_features) -> str:
    return f"blocks per stage {list(layers)}, widths {list(widths)}, {num_features} features"


@dataclass
class ResumeCheckpoint:
    """What train_fr.py keeps of the `--ckpt_path` checkpoint it checked (the weights are dropped)."""

    path: str
    logger_versions: list = field(default_factory=list)
    num_classes: int | None = None
    colour_order: str | None = None
    shapes: dict = field(default_factory=dict)  # state-dict key -> shape

    def fits(self, model: FaceRecognitionModule) -> None:
        """Refuse (InputError) a checkpoint whose weights do not load into `model`, the module this run built."""
        hparams = model.hparams
        if self.num_classes is not None and self.num_classes != int(hparams.num_classes):
            raise InputError(f"{CKPT} {self.path} was trained on {self.num_classes} classes (identities); this run's "
                             f"training data has {hparams.num_classes}: a checkpoint resumes only on the data it was "
                             f"trained on (another class count needs a new run, without {CKPT})")
        if self.colour_order not in (None, hparams.colour_order):
            raise InputError(f"{CKPT} {self.path} was trained on {self.colour_order.upper()} images; this run's data "
                             f"feeds {str(hparams.colour_order).upper()}: set the data's colour_order to "
                             f"{self.colour_order!r} or start a new run without {CKPT}")
        expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        missing = sorted(expected.keys() - self.shapes.keys())
        unexpected = sorted(self.shapes.keys() - expected.keys())
        wrong = [f"{key} {self.shapes[key]} vs {shape}" for key, shape in expected.items()
                 if key in self.shapes and self.shapes[key] != shape]
        if missing or unexpected or wrong:
            parts = [f"{len(items)} {label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                     for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                          ("shape mismatches (checkpoint vs model)", wrong)) if items]
            raise InputError(f"{CKPT} {self.path} does not fit this run's FaceRecognitionModule: {'; '.join(parts)}")


def inspect_resume_checkpoint(path: str, checkpoint: object, configured_model, training: bool = True) -> ResumeCheckpoint:
    """Check that `checkpoint` (loaded from `path`) is a training checkpoint of FaceRecognitionModule for the
    network `configured_model` (the parsed `model` options) describes; an InputError naming what is wrong."""
    advice = f"resume from the last.ckpt (or grafiqs.ckpt) of a train_fr.py run, or start a new run without {CKPT}"
    if not isinstance(checkpoint, dict):
        raise InputError(f"{CKPT} {path} holds a {type(checkpoint).__name__}, not a training checkpoint: {advice}")
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        if checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
            raise InputError(f"{CKPT} {path} is a plain state dict of weights (a backbone.pth?), not a training "
                             f"checkpoint: it has no optimizer, schedule or loop state to resume; {advice}")
        raise InputError(f"{CKPT} {path} is not a Lightning checkpoint (no state_dict): {advice}")
    missing = [key for key in TRAINING_STATE if key not in checkpoint]
    if training and missing:
        raise InputError(f"{CKPT} {path} holds weights without the training state ({', '.join(missing)} missing: a "
                         f"backbone.ckpt, or a checkpoint saved with save_weights_only); {advice}")
    hparams = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hparams, dict) or hparams.get("_class_path", MODULE_PATH) != MODULE_PATH:
        written_for = hparams.get("_class_path") if isinstance(hparams, dict) else type(hparams).__name__
        raise InputError(f"{CKPT} {path} is a checkpoint of {written_for}, not of {MODULE_PATH}; {advice}")
    backbone = {key[len("backbone."):]: value for key, value in state.items()
                if isinstance(key, str) and key.startswith("backbone.") and isinstance(value, torch.Tensor)}
    if "conv1.weight" not in backbone or "fc.weight" not in backbone:
        raise InputError(f"{CKPT} {path} holds no iResNet backbone (no backbone.conv1.weight, backbone.fc.weight): it "
                         f"is not a checkpoint of FaceRecognitionModule; {advice}")
    found = describe_architecture(backbone)
    arch = configured_model.get("arch")
    layers = configured_model.get("layers") or ARCHITECTURES.get(arch)
    widths = configured_model.get("widths") or DEFAULT_WIDTHS
    configured = (tuple(layers or ()), tuple(widths), configured_model.get("num_features"))
    if configured != (found["layers"], found["widths"], found["num_features"]):
        named = f" ({found['arch']})" if found["arch"] else ""
        raise InputError(f"{CKPT} {path} holds another network than this run's model: the checkpoint's backbone has "
                         f"{network(found['layers'], found['widths'], found['num_features'])}{named}, the configured "
                         f"model {network(*configured)}: resume with the configuration it was trained with, or start "
                         f"a new run without {CKPT}")
    head = state.get("head.weight")
    num_classes = hparams.get("num_classes", head.shape[0] if isinstance(head, torch.Tensor) and head.dim() == 2 else None)
    metadata = checkpoint.get(METADATA_KEY) if isinstance(checkpoint.get(METADATA_KEY), dict) else {}
    return ResumeCheckpoint(
        path=str(path),
        logger_versions=logger_versions(checkpoint),
        num_classes=None if num_classes is None else int(num_classes),
        colour_order=hparams.get("colour_order", metadata.get("colour_order")),
        shapes={key: tuple(value.shape) for key, value in state.items() if isinstance(value, torch.Tensor)},
    )


# --------------------------------------------------------------------------- the files it writes


def config_file_name(folder: OutputFolder, wanted: str) -> str:
    """`wanted` if it is free or still the program's own file, else the first free or own `<stem>-<n><suffix>`."""
    stem, suffix = os.path.splitext(wanted)
    recorded = folder.recorded()
    for number in count():
        name = wanted if number == 0 else f"{stem}-{number}{suffix}"
        if not os.path.lexists(folder.path / name) or folder.owns(name, recorded):
            return name


class ConfigToLoggers(SaveConfigCallback):
    """Writes the resolved configuration to the log dir as Lightning does, and logs it as hyper-parameters of
    every logger (W&B run config, TensorBoard hparams), so a run records its precision, devices, data,
    augmentations and callbacks too.

    The file is an atomic, ledgered write (`grafiqs.io`): it replaces a `config.yaml` only while that is
    still what this program wrote there, and goes to `config-1.yaml` (the next free or own name) otherwise.
    """

    def setup(self, trainer, pl_module, stage) -> None:
        if self.already_saved:
            return
        if self.save_to_log_dir:
            log_dir = trainer.log_dir  # broadcast from rank 0
            on_rank_zero_for_all(trainer, lambda: self.write_config(Path(log_dir)))
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def write_config(self, log_dir: Path) -> None:
        folder = OutputFolder(log_dir, what="log folder (trainer.log_dir)",
                              advice="move them or choose another --trainer.default_root_dir or logger save_dir")
        name = config_file_name(folder, self.config_filename)
        folder.claim({name})
        atomic_write_text(folder.path / name, self.parser.dump(self.config, skip_none=False))
        if name != self.config_filename:
            print(f"note: {folder.path / self.config_filename} is not a file this program wrote; it is kept and this "
                  f"run's configuration is written to {name}", file=sys.stderr)

    def save_config(self, trainer, pl_module, stage) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False, skip_link_targets=False))
        for logger in trainer.loggers:
            logger.log_hyperparams(config)


# --------------------------------------------------------------------------- resuming


def logger_versions(checkpoint: object) -> list:
    run = checkpoint.get(RUN_KEY) if isinstance(checkpoint, dict) else None
    versions = run.get("logger_versions") if isinstance(run, dict) else None
    return list(versions) if isinstance(versions, (list, tuple)) else []


def resume_logger_runs(config, checkpoint) -> None:
    """Give each configured logger the `version` (W&B: run id) recorded in `checkpoint` (a path or its content),
    unless set.

    Loggers are matched by position; W&B resumes a run with a known id (`resume="allow"`),
    TensorBoard/CSV write on into the same version folder, and so do the checkpoints under it.
    """
    versions = logger_versions(checkpoint if isinstance(checkpoint, dict) else load_checkpoint_file(checkpoint))
    loggers = config.trainer.logger
    loggers = loggers if isinstance(loggers, list) else [loggers]
    for logger, version in zip(loggers, versions):
        init_args = getattr(logger, "init_args", None)
        if init_args is None or version is None:
            continue
        if init_args.get("version") is None and init_args.get("id") is None:
            init_args["version"] = version


def one_line(message: str) -> str:
    """A jsonargparse error on one line: the lines that say what is wrong, without the union and value dumps."""
    noise = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value type:",
             "Given value:", "- Expected a <class 'NoneType'>")
    lines = (line.strip() for line in str(message).splitlines())
    return " ".join(line.removeprefix("- ") for line in lines if line and not line.startswith(noise))


class FaceRecognitionCLI(LightningCLI):
    def init_parser(self, **kwargs):
        """Lightning's parser, raising ArgumentError instead of printing the usage, and a checked `--config`."""
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={pl.__version__}"])
        kwargs.setdefault("exit_on_error", False)
        parser = self.parser_class(**kwargs)
        parser.add_argument("-c", "--config", action=CheckedConfigFile,
                            help="Path to a configuration file in json or yaml format.")
        return parser

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.colour_order", "model.colour_order", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """Lightning's step (the model's hyper-parameters from `--ckpt_path`), after checking the checkpoint.

        The file is read once, through the regular-file check, and must be a training checkpoint of this
        module for the configured network; what later checks need is kept in `self.resume`.
        """
        self.resume = None
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not path or (path in LIGHTNING_CKPT_NAMES and not os.path.lexists(path)):
            return
        checkpoint = load_checkpoint_file(path)
        self.resume = inspect_resume_checkpoint(path, checkpoint, self.config[subcommand].model,
                                                training=subcommand == "fit")
        hparams = {key: value for key, value in (checkpoint.get("hyper_parameters") or {}).items()
                   if key not in ("_instantiator", "_class_path")}
        del checkpoint  # the weights: Lightning loads the file again when it restores the run
        if hparams:
            try:
                self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
            except ArgumentError as error:
                raise InputError(f"{CKPT} {path}: its hyper-parameters do not fit FaceRecognitionModule "
                                 f"({one_line(error)}); it was written by another model or version") from None

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand)) if self.subcommand else None
        if config is not None and self.resume is not None:
            resume_logger_runs(config, {RUN_KEY: {"logger_versions": self.resume.logger_versions}})

    def instantiate_trainer(self, **kwargs):
        if self.resume is not None:  # data and model exist now; refused before the Trainer starts up
            self.resume.fits(self.model)
        trainer = super().instantiate_trainer(**kwargs)
        # the checkpoint folders are checked first, before other callbacks create files (Lightning keeps this order)
        trainer.callbacks.sort(key=lambda callback: not isinstance(callback, LedgeredCheckpoints))
        subcommand = self.config.get("subcommand")
        for callback in trainer.callbacks:
            if isinstance(callback, LedgeredCheckpoints):
                callback.resume_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        return trainer


def grafiqs_error_behind(error: BaseException | None) -> GrafiqsError | None:
    """The GrafiqsError that caused `error`, if any: jsonargparse re-raises errors of class
    instantiation (e.g. a bad augmentation spec) as a ValueError chained to the original."""
    while error is not None and not isinstance(error, GrafiqsError):
        error = error.__cause__ or error.__context__
    return error


def main(args=None) -> int:
    retain_freed_memory()  # 1.3x faster CPU training steps (40 demo.yaml steps: 91 s -> 71 s); grafiqs/allocator.py
    try:
        FaceRecognitionCLI(
            FaceRecognitionModule,
            FaceDataModule,
            subclass_mode_data=True,
            save_config_callback=ConfigToLoggers,
            trainer_defaults={"callbacks": [EpochEndLastCheckpoint(), LedgeredCheckpoints()]},
            args=args,
        )
    except Exception as error:
        cause = grafiqs_error_behind(error)
        if cause is not None:
            if not getattr(cause, "reported_by_rank_zero", False):  # DDP: rank 0 says it once
                print(f"error: {cause}", file=sys.stderr)
            return 2
        if isinstance(error, ArgumentError):
            print(f"error: {one_line(error)} ({HELP_HINT})", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
