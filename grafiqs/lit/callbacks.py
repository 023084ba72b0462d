"""End-of-training callbacks: exact BatchNorm re-estimation, export of the backbone, last.ckpt at every epoch end.

GraFIQs scores an image by how far its BatchNorm input statistics are from the running
mean/variance stored in the network. During training those are exponential moving averages
of *augmented* batches seen while the weights were still changing, i.e. statistics of no
single network. `BNRecalibration` re-estimates them for the final weights, on non-augmented
training data, as an exact cumulative average (PyTorch's `momentum=None`): every BN's
running mean is the mean of N per-batch means and its running variance the mean of N
per-batch *unbiased* variances (what BN itself stores in `running_var`).

`ExportBackbone` then writes the recalibrated backbone as a plain insightface-layout state
dict (`backbone.pth`, readable by `load_backbone` and by the authors' script) and a project
checkpoint (`grafiqs.ckpt`) whose metadata records the architecture, channel order and
normalisation. Both callbacks act in `on_train_end`, while the model is still on its device
(Lightning's `on_fit_end` comes after the strategy teardown has moved it to the CPU), and
`ExportBackbone` makes sure any pending recalibration runs before it writes anything. Its
folder is claimed (`grafiqs.io.ledger.OutputFolder`) when fit starts, before any training, so a
folder holding someone else's `backbone.pth` refuses the run at once, and every export is a
ledgered atomic write: the program replaces only the files it wrote there itself.

`EpochEndLastCheckpoint` writes the `last.ckpt` of every `ModelCheckpoint(save_last=...)` at the end
of every training epoch, the run's last (possibly partial) epoch included, whatever the callback's
step or time triggers: Lightning's own ModelCheckpoint writes "last" at an epoch end only when it
saved another checkpoint at that very step, and at the end of fit only when it never saved at all.

`LedgeredCheckpoints` puts the checkpoints of every `ModelCheckpoint` under the same rule as the exports:
their folders are claimed when fit starts (a `last.ckpt` there that this program did not write refuses
the run before it trains; the one `--ckpt_path` resumes from is adopted, its continuation replaces it),
every checkpoint is a ledgered atomic write, and Lightning's removal of an older checkpoint deletes it
only while it is still exactly the file the program wrote.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from grafiqs.errors import InputError
from grafiqs.io.atomic import atomic_write_with, remove_own
from grafiqs.io.ledger import OutputFolder
from grafiqs.models.loading import METADATA_KEY

BACKBONE_FILE = "backbone.pth"
BACKBONE_CHECKPOINT_FILE = "backbone.ckpt"
CHECKPOINT_FILE = "grafiqs.ckpt"
EXPORTED_FILES = (BACKBONE_FILE, BACKBONE_CHECKPOINT_FILE, CHECKPOINT_FILE)


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable, forward: Callable[[torch.Tensor], object]) -> int:
    """Re-estimate every BN's running statistics as the exact average over `batches`; returns the count.

    BN layers run in train mode (batch statistics, as during training) with `momentum=None`
    (cumulative average) after `reset_running_stats`; every other module stays in eval mode so
    that e.g. dropout does not change the statistics of later layers. Momenta are restored and
    the model is left in eval mode.
    """
    layers = batchnorm_layers(model)
    momenta = [bn.momentum for bn in layers]
    model.eval()
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    count = 0
    try:
        for images in batches:
            forward(images)
            count += 1
    finally:
        for bn, momentum in zip(layers, momenta):
            bn.momentum = momentum
        model.eval()
    if count == 0:
        raise RuntimeError("BatchNorm recalibration got no batches")
    return count


class BNRecalibration(L.Callback):
    """At the end of training, re-estimate the backbone's BN statistics over `num_batches` batches
    of non-augmented training data (the datamodule's `calibration_dataloader`).

    Under DDP each process averages its own shard, then the per-process averages are averaged
    (equal batch counts on every rank, so this is the exact average over all batches; with
    SyncBatchNorm the processes already agree). `fast_dev_run` uses one batch.
    """

    def __init__(self, num_batches: int = 200, batch_size: int | None = None):
        super().__init__()
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        self.num_batches = int(num_batches)
        self.batch_size = batch_size
        self.done = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.done = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.done:
            self.recalibrate(trainer, pl_module)

    def recalibrate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "calibration_dataloader"):
            raise RuntimeError("BNRecalibration needs a datamodule with calibration_dataloader() (a grafiqs FaceDataModule)")
        loader = datamodule.calibration_dataloader(rank=trainer.global_rank, world_size=trainer.world_size, batch_size=self.batch_size)
        wanted = 1 if trainer.fast_dev_run else self.num_batches
        count = min(wanted, len(loader))  # len(loader) is the same on every rank (DistributedSampler pads)
        backbone = pl_module.backbone
        device = pl_module.device

        def batches():
            for index, (images, _) in enumerate(loader):
                if index >= count:
                    break
                yield images.to(device, non_blocking=True)

        used = recalibrate_batchnorm(backbone, batches(), pl_module)  # its forward: normalise, embed
        if trainer.world_size > 1:
            for bn in batchnorm_layers(backbone):
                bn.running_mean.copy_(trainer.strategy.reduce(bn.running_mean.clone(), reduce_op="mean"))
                bn.running_var.copy_(trainer.strategy.reduce(bn.running_var.clone(), reduce_op="mean"))
                bn.num_batches_tracked.copy_(trainer.strategy.reduce(bn.num_batches_tracked.clone(), reduce_op="sum"))
        total = used * trainer.world_size
        pl_module.bn_recalibration = {"num_batches": int(total), "batch_size": int(loader.batch_size), "augmented": False}
        self.done = True
        rank_zero_info(f"BNRecalibration: BatchNorm statistics re-estimated over {total} batches of {loader.batch_size} non-augmented images")


def backbone_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copy of the backbone's state dict: insightface keys, no prefixes, tensors only."""
    return {key: value.detach().to("cpu", copy=True).contiguous() for key, value in backbone.state_dict().items()}


def save_backbone_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
    """The backbone's weights plus its metadata (architecture, colour order, normalisation), no
    head or optimizer: what `score.py --weights` needs, at the size of the plain .pth. An atomic
    write, ledgered when `path` lies in a claimed folder."""
    content = {"state_dict": {f"backbone.{k}": v for k, v in state_dict.items()}, METADATA_KEY: metadata}
    atomic_write_with(path, lambda file: torch.save(content, file))


def on_rank_zero_for_all(trainer: L.Trainer, action: Callable[[], None]) -> None:
    """Run `action` on global rank 0 only; if it refuses (InputError), every rank raises it.

    Collective under DDP (a broadcast), so the other ranks never wait forever in a barrier for a rank 0
    that failed. The copies raised on the other ranks are marked `reported_by_rank_zero`: train_fr.py
    prints the one error line once, from rank 0.
    """
    problem = None
    if trainer.is_global_zero:
        try:
            action()
        except InputError as error:
            problem = str(error)
    problem = trainer.strategy.broadcast(problem)
    if problem is not None:
        error = InputError(problem)
        error.reported_by_rank_zero = not trainer.is_global_zero
        raise error


class ExportBackbone(L.Callback):
    """At the end of training write `backbone.pth`, `backbone.ckpt` and `grafiqs.ckpt` into `dirpath`.

    `backbone.pth`: plain state dict of the backbone (insightface layout) for `load_backbone`
    / `score.py --weights` / the authors' script. `backbone.ckpt`: the same weights with the
    metadata, so score.py picks the colour order itself. `grafiqs.ckpt`: the full Lightning checkpoint
    (module hparams plus `checkpoint["grafiqs"]`: arch, layers, widths, num_features,
    colour_order, normalisation, BN recalibration), read by `read_checkpoint_metadata`.
    `dirpath` defaults to the Trainer's `default_root_dir`. Skipped under `fast_dev_run`,
    as Lightning's own checkpointing is.

    The folder is claimed when fit starts (`setup`): a run is refused, before it trains or creates
    anything, if one of the three files there is not exactly a file this program wrote (its ledger,
    `.grafiqs/written.jsonl`, says so); a finished run's own files are replaced by the next run.
    """

    def __init__(self, dirpath: str | None = None):
        super().__init__()
        self.dirpath = dirpath

    def output_folder(self, trainer: L.Trainer) -> OutputFolder:
        what = "ExportBackbone's dirpath" if self.dirpath else "--trainer.default_root_dir"
        return OutputFolder(self.dirpath or trainer.default_root_dir, what=what,
                            advice=f"move them or choose another {what}")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and not trainer.fast_dev_run:
            on_rank_zero_for_all(trainer, lambda: self.output_folder(trainer).claim(EXPORTED_FILES))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Any BNRecalibration that Lightning would call after us runs now: the export must see its statistics.
        for callback in trainer.callbacks:
            if isinstance(callback, BNRecalibration) and not callback.done:
                callback.recalibrate(trainer, pl_module)
        if trainer.fast_dev_run:
            rank_zero_info("ExportBackbone: fast_dev_run, nothing exported")
            return
        folder = self.output_folder(trainer)
        # What trainer.save_checkpoint would write (collective under DDP: a sharded head is gathered), but
        # written by rank 0 through the ledger instead of the strategy's checkpoint IO.
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)

        def export() -> None:
            atomic_write_with(folder.path / CHECKPOINT_FILE, lambda file: torch.save(checkpoint, file))
            state_dict = backbone_state_dict(pl_module.backbone)
            atomic_write_with(folder.path / BACKBONE_FILE, lambda file: torch.save(state_dict, file))
            save_backbone_checkpoint(folder.path / BACKBONE_CHECKPOINT_FILE, state_dict, pl_module.backbone_metadata())
            rank_zero_info(f"ExportBackbone: wrote {BACKBONE_FILE}, {BACKBONE_CHECKPOINT_FILE} and {CHECKPOINT_FILE} to {folder.path}")

        on_rank_zero_for_all(trainer, export)  # also the barrier: no rank returns before the files exist


class EpochEndLastCheckpoint(L.Callback):
    """Write the `last.ckpt` of every `ModelCheckpoint` with `save_last` at the end of every training epoch.

    The end of fit is an epoch end too (a run stopped by `max_steps` in mid-epoch ends that epoch), and
    this hook comes before `on_train_end`, so the checkpoint holds the training's own BN statistics, not
    the recalibrated ones. Each distinct last path is written once (the configs point a step- and a
    time-triggered ModelCheckpoint at the same file); the callbacks are told it is their last checkpoint,
    so a later save of theirs replaces it instead of adding `last-v1.ckpt`. Their own step, time and
    top-k saves are untouched. A checkpoint written here resumes at the start of the next epoch, or in
    mid-epoch after a `max_steps` stop (`grafiqs.lit.fr_module.resume_between_batches`).
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        metrics = {**trainer.callback_metrics, "epoch": torch.tensor(trainer.current_epoch),
                   "step": torch.tensor(trainer.global_step)}
        written: set[str] = set()
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint) or not callback.save_last or callback.dirpath is None:
                continue
            path = callback.format_checkpoint_name(metrics, callback.CHECKPOINT_NAME_LAST)
            if path not in written:
                trainer.save_checkpoint(path, weights_only=callback.save_weights_only)  # collective under DDP
                written.add(path)
            callback.last_model_path = path


class LedgeredCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint files through `grafiqs.io`: a checkpoint under a claimed folder is an atomic, ledgered
    write that never replaces a file the program did not write, and is removed only while it is still its own."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_with(path, lambda file: torch.save(checkpoint, file))

    def remove_checkpoint(self, path) -> None:
        kept = remove_own(path) if _is_local_file_protocol(path) else None
        if kept is None:
            super().remove_checkpoint(path)
        elif kept is False:
            rank_zero_info(f"LedgeredCheckpoints: {path} is not a file this program wrote (or changed since); kept")


class LedgeredCheckpoints(L.Callback):
    """Every ModelCheckpoint's folder is claimed (checked, locked, ledgered) when fit starts; see the module doc.
    `resume_path`: the fit's `--ckpt_path` (Lightning sets `trainer.ckpt_path` only after the setup hooks)."""

    def __init__(self, resume_path: str | None = None):
        super().__init__()
        self.resume_path = resume_path
        self.claims: list = []  # what setup checked, claimed when fit starts

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.fast_dev_run:
            return
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = LedgeredCheckpointIO()
        # Lightning moves the ModelCheckpoints to the end of the callbacks and train_fr.py puts this one first: the
        # check runs before their setup, before the exports' folder is claimed and the configuration written
        self.claims = []
        on_rank_zero_for_all(trainer, lambda: self.claims.extend(check_checkpoint_folders(trainer, self.resume_path)))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def claim() -> None:
            for folder, names, resumed in self.claims:
                folder.claim(names)
                folder.adopt(name for name in resumed if not folder.owns(name))

        if not trainer.fast_dev_run:
            on_rank_zero_for_all(trainer, claim)


def checkpoint_folder(callback: ModelCheckpoint, trainer: L.Trainer) -> str | None:
    """The folder `callback` saves into: its dirpath, or the one its setup will choose by Lightning's own rule."""
    if callback.dirpath is not None:
        return str(callback.dirpath)
    resolve = getattr(callback, "_ModelCheckpoint__resolve_ckpt_dir", None)  # what ModelCheckpoint.setup calls
    return None if resolve is None else str(resolve(trainer))


def check_checkpoint_folders(trainer: L.Trainer, resume_path: str | None = None) -> list:
    """Check the local folder of every ModelCheckpoint for its `last.ckpt` (InputError if someone else's is there),
    creating nothing; [(OutputFolder, names, resumed names)] to claim. The checkpoint the run resumes from
    (`resume_path`), if it lies there, becomes the program's own (train_fr.py checked it as a checkpoint of this
    run's model); with `--ckpt_path last`, the folders' last.ckpt."""
    folders: dict[Path, set[str]] = {}
    for callback in trainer.checkpoint_callbacks:
        dirpath = checkpoint_folder(callback, trainer) if isinstance(callback, ModelCheckpoint) else None
        if dirpath and _is_local_file_protocol(dirpath):
            names = folders.setdefault(Path(dirpath).absolute(), set())
            if callback.save_last and "{" not in callback.CHECKPOINT_NAME_LAST:
                names.add(callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION)
    advice = "move them, choose another dirpath (or logger save_dir), or resume from the checkpoint with --ckpt_path"
    claims = []
    for path, names in folders.items():
        if resume_path == "last":
            resumed = {name for name in names if (path / name).is_file()}
        else:
            given = Path(resume_path).absolute() if resume_path else None
            resumed = {given.name} if given is not None and given.parent == path and given.is_file() else set()
        claims.append((OutputFolder(path, what="ModelCheckpoint dirpath", advice=advice), names - resumed, resumed))
    for folder, names, _ in claims:
        folder.check(names)
    return claims
