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

Resume with `--ckpt_path <checkpoint>` (e.g. the `last.ckpt` the configs write every N steps
and every 30 minutes): the model's hyper-parameters come from the checkpoint, the trainer and
data settings from the command line, so `--trainer.max_steps`/`max_epochs` may be raised and the
LR schedule follows the new length. The loggers continue the checkpoint's runs (same W&B run
id) unless a `version`/`id` is given. The whole resolved configuration (trainer, data, model,
callbacks) is sent to every logger. Bad input (a corrupt `.bin` validation set, a missing data
folder, ...) ends with one `error: ...` line on stderr and exit status 2.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback  # noqa: E402

from grafiqs.allocator import retain_freed_memory  # noqa: E402
from grafiqs.data.datamodules import FaceDataModule  # noqa: E402
from grafiqs.errors import GrafiqsError  # noqa: E402
from grafiqs.lit.fr_module import RUN_KEY, FaceRecognitionModule  # noqa: E402


class ConfigToLoggers(SaveConfigCallback):
    """Writes config.yaml to the log dir as Lightning does, and logs the whole resolved
    configuration as hyper-parameters of every logger (W&B run config, TensorBoard hparams),
    so a run records its precision, devices, data, augmentations and callbacks too."""

    def save_config(self, trainer, pl_module, stage) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False, skip_link_targets=False))
        for logger in trainer.loggers:
            logger.log_hyperparams(config)


def resume_logger_runs(config, checkpoint_path: str) -> None:
    """Give each configured logger the `version` (W&B: run id) recorded in the checkpoint, unless set.

    Loggers are matched by position; W&B resumes a run with a known id (`resume="allow"`),
    TensorBoard/CSV write on into the same version folder, and so do the checkpoints under it.
    """
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
    versions = (checkpoint.get(RUN_KEY) or {}).get("logger_versions") or []
    loggers = config.trainer.logger
    loggers = loggers if isinstance(loggers, list) else [loggers]
    for logger, version in zip(loggers, versions):
        init_args = getattr(logger, "init_args", None)
        if init_args is None or version is None:
            continue
        if init_args.get("version") is None and init_args.get("id") is None:
            init_args["version"] = version


class FaceRecognitionCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.colour_order", "model.colour_order", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand)) if self.subcommand else None
        checkpoint_path = config.get("ckpt_path") if config is not None else None
        if checkpoint_path and Path(checkpoint_path).is_file():
            resume_logger_runs(config, checkpoint_path)


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
            save_config_kwargs={"overwrite": True},
            args=args,
        )
    except Exception as error:
        cause = grafiqs_error_behind(error)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
