"""Face-recognition training (iResNet + margin softmax) as a LightningModule, with verification metrics.

Why this exists in a quality-assessment project: GraFIQs reads the BatchNorm running
statistics of a trained face-recognition network, so the project must be able to train
(small, CPU-sized) iResNets itself, record how their inputs were prepared (channel order,
normalisation) and re-estimate their BN statistics exactly (`grafiqs.lit.callbacks`).

Every init argument is a plain type, so LightningCLI / YAML configure the module and the
hyper-parameters stored in checkpoints load with `torch.load(weights_only=True)` (and
`train_fr.py --ckpt_path` can re-parse them: nothing but init arguments goes there).
The gradient-clipping value, mixed precision, DDP and SyncBatchNorm are Trainer flags (see
the configs); which parameters are clipped is `clip_backbone_only`.

Resuming (`trainer.fit(..., ckpt_path=...)`): the LR schedule is rebuilt from the current
run's length, only its position comes from the checkpoint (`RunLengthLambdaLR`), so a
resume with a larger `max_steps`/`max_epochs` follows the new horizon. Checkpoints record
every logger's `version` (the W&B run id) under `checkpoint["grafiqs_run"]`, which
`train_fr.py` uses to continue the same runs. A checkpoint written between two batches (at an
epoch's end, or at the end of a run that `max_steps` stopped in mid-epoch) has its loop progress
rewritten on loading (`resume_between_batches`): Lightning would otherwise count its epoch as
unfinished or its batches as already served, and train an epoch short or skip one.

arcface_torch parity switches (defaults keep this project's earlier behaviour; the GPU recipes
in configs/train_fr set arcface_torch's values): `margin_grad` ("exact" | "straight_through"),
`poly_power` (2; arcface_torch's current PolynomialLRWarmup: 1), `clip_backbone_only`
(False; arcface_torch: True), `fp32_head` (False; True runs the class-centre matmul in fp32
under mixed precision). Scale: `head="partial_fc"` shards the class centres over the ranks
(`grafiqs.models.partial_fc`), `gradient_checkpointing` recomputes each residual block in
the backward pass instead of storing its activations.

Validation: each validation dataloader serves the unique images of one verification pair set
as (index, uint8 image). Embeddings (optionally the sum with the horizontally flipped image's,
as insightface evaluates) are collected in a torchmetrics `Metric` whose list states are
concatenated across processes, so it works single-process and under DDP (duplicates from the
DistributedSampler's padding are dropped by index). Per set:

* `val/<set>/acc`: 10-fold accuracy as insightface's `evaluate` (contiguous folds, threshold
  chosen on the 9 other folds, exact best threshold over all distinct scores instead of
  insightface's 0.01 grid); a plain best-threshold accuracy when there are fewer than 20 pairs;
* `val/<set>/tar@fmr1e-3`: the true-accept rate at the threshold the evaluation fixes for FMR
  1e-3 (`grafiqs.evaluation.edc.threshold_at_fmr`: accept iff cosine > t), so training logs and
  ablation reports agree. With fewer than 1000 impostor pairs this is the TAR at zero false matches.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from lightning.pytorch.utilities import rank_zero_info
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from grafiqs.data.decode import INPUT_SIZE, NORMALIZATION, normalize
from grafiqs.evaluation.edc import threshold_at_fmr
from grafiqs.models.heads import build_head
from grafiqs.models.iresnet import ARCHITECTURES, IResNet, build_iresnet
from grafiqs.models.loading import METADATA_KEY
from grafiqs.models.partial_fc import PartialFCHead

FMR_TARGET = 1e-3
RUN_KEY = "grafiqs_run"  # checkpoint entry: {"logger_versions": [...]} for resuming the same logger runs


# --------------------------------------------------------------------------- verification metrics


def best_threshold_accuracy(scores: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """(accuracy, threshold) of the best rule `score > threshold` -> genuine, over all distinct scores.

    Sorting once gives every split point; a split is only allowed between distinct scores
    (a threshold cannot separate ties). The threshold is the midpoint of the split.
    """
    scores = np.asarray(scores, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], issame[order]
    n = len(s)
    tp = np.concatenate([[0], np.cumsum(y)])  # genuine pairs among the k highest scores
    fp = np.arange(n + 1) - tp
    correct = tp + ((~y).sum() - fp)
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s[:-1] > s[1:]
    k = int(np.argmax(np.where(valid, correct, -1)))
    if k == 0:
        threshold = s[0] + 1.0 if n else 0.0
    elif k == n:
        threshold = s[-1] - 1.0
    else:
        threshold = (s[k - 1] + s[k]) / 2
    return float(correct[k] / max(n, 1)), float(threshold)


def kfold_accuracy(scores: np.ndarray, issame: np.ndarray, folds: int = 10) -> float:
    """insightface-style k-fold verification accuracy (contiguous folds, threshold from the other folds)."""
    scores = np.asarray(scores, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    n = len(scores)
    if n < 2 * folds:
        return best_threshold_accuracy(scores, issame)[0]
    correct = 0
    for test in np.array_split(np.arange(n), folds):
        train = np.ones(n, dtype=bool)
        train[test] = False
        _, threshold = best_threshold_accuracy(scores[train], issame[train])
        correct += int(((scores[test] > threshold) == issame[test]).sum())
    return correct / n


def tar_at_fmr(scores, issame, fmr: float = FMR_TARGET) -> float:
    """TAR at the threshold the evaluation fixes for `fmr` (grafiqs.evaluation.edc: accept iff score > t)."""
    scores, issame = np.asarray(scores, dtype=np.float64), np.asarray(issame, dtype=bool)
    if issame.all() or not issame.any():
        return float("nan")
    return float((scores[issame] > threshold_at_fmr(scores, issame, fmr)).mean())


def verification_metrics(embeddings: torch.Tensor, present: torch.Tensor, pairs: np.ndarray, issame: np.ndarray) -> dict | None:
    """Metrics of one pair set from L2-normalised embeddings [num_images, D] (rows with `present`).

    Pairs whose images were not embedded (e.g. `limit_val_batches`, `fast_dev_run`) are left out;
    None when no genuine or no impostor pair remains.
    """
    pairs_t = torch.as_tensor(pairs, device=embeddings.device)
    keep = present[pairs_t[:, 0]] & present[pairs_t[:, 1]]
    if not bool(keep.any()):
        return None
    pairs_t = pairs_t[keep]
    same = torch.as_tensor(issame, device=embeddings.device)[keep]
    if same.all() or not same.any():
        return None
    scores = (embeddings[pairs_t[:, 0]] * embeddings[pairs_t[:, 1]]).sum(dim=1)
    scores_np, same_np = scores.double().cpu().numpy(), same.cpu().numpy()
    return {
        "acc": kfold_accuracy(scores_np, same_np),
        "tar@fmr1e-3": tar_at_fmr(scores_np, same_np),
        "pairs": int(keep.sum()),
    }


class EmbeddingCollector(Metric):
    """Collects (image index, embedding) batches; `compute()` gathers them from every process ("cat")."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")

    def update(self, indices: torch.Tensor, embeddings: torch.Tensor) -> None:
        self.indices.append(indices.long().view(-1))
        self.embeddings.append(embeddings.float())

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        return dim_zero_cat(self.indices), dim_zero_cat(self.embeddings)


# --------------------------------------------------------------------------- schedule


class WarmupSchedule:
    """LR factor per optimizer step: linear warm-up to 1, then polynomial or cosine decay to `min_ratio`.

    A callable object rather than a closure so that LambdaLR's state dict stays plain data.
    """

    def __init__(self, warmup_steps: int, total_steps: int, schedule: str = "poly", power: float = 2.0, min_ratio: float = 0.0):
        if schedule not in ("poly", "cosine"):
            raise ValueError(f"schedule must be 'poly' or 'cosine', got {schedule!r}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)
        self.schedule = schedule
        self.power = float(power)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(max(step - self.warmup_steps, 0) / max(self.total_steps - self.warmup_steps, 1), 1.0)
        decay = (1.0 - progress) ** self.power if self.schedule == "poly" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_ratio + (1.0 - self.min_ratio) * decay


class RunLengthLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR whose schedule always comes from the current run; a checkpoint restores only its position.

    LambdaLR's state dict stores the attributes of a callable-object schedule, so plain loading
    would bring back the horizon of the run that wrote the checkpoint: a resume with a larger
    `max_steps` would then train at that run's final LR (0 for the poly decay). Here the step
    count is restored and the optimizer's LR is set from this run's schedule at that step.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({**state_dict, "lr_lambdas": [None] * len(self.lr_lambdas)})
        self._last_lr = [base * schedule(self.last_epoch) for base, schedule in zip(self.base_lrs, self.lr_lambdas)]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


# --------------------------------------------------------------------------- resuming between batches


def _zeroed(progress: dict) -> None:
    """Set every counter of a Lightning progress state dict (nested ready/started/processed/completed) to 0."""
    for key, value in progress.items():
        if isinstance(value, dict):
            _zeroed(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            progress[key] = 0


def resume_between_batches(fit_loop: dict, accumulate_grad_batches: int = 1) -> str | None:
    """Rewrite the saved progress of a fit loop stopped between two batches so that Lightning resumes it right.

    A checkpoint written after an epoch's end hooks (`on_train_epoch_end`, `on_train_end`) says the epoch
    was processed while its batch counters still stand at its last batch. Resumed with a `max_steps`
    horizon, Lightning restarts "iteration based": it takes the saved batch counter as the position in the
    next epoch while the loader starts that epoch at 0, so it trains a short epoch (or none) and the data
    order of the epoch after. A run that `max_steps` stopped in mid-epoch is worse: its end hooks count the
    unfinished epoch as done, so the resumed run skips the rest of it and the first part of the next.

    Here such a state becomes one that Lightning resumes correctly under `max_steps`, `max_epochs` or both:
    after a whole epoch, the start of the next epoch (its batch counters at 0, as a new epoch begins); in
    mid-epoch, the state Lightning itself saves after that batch (`on_train_batch_end`), whose position the
    resumable loader restores. Checkpoints saved inside a batch or before an epoch's end hooks are left as
    they are. Returns where the run resumes, or None when nothing was changed.
    """
    epochs, batches = fit_loop.get("epoch_progress"), fit_loop.get("epoch_loop.batch_progress")
    if not isinstance(epochs, dict) or not isinstance(batches, dict):
        return None
    try:
        counts = batches["total"]
        if not counts["ready"] == counts["started"] == counts["processed"] == counts["completed"]:
            return None  # saved inside a batch: Lightning's own restart handles it
        for progress in (epochs["total"], epochs["current"]):
            if not 0 < progress["started"] == progress["ready"] == progress["processed"] >= progress["completed"]:
                return None  # not after an epoch's end hooks
        served = int(batches["current"]["completed"])
        scheduler, loop_state = fit_loop["epoch_loop.scheduler_progress"]["current"], fit_loop["epoch_loop.state_dict"]
        if batches.get("is_last_batch"):
            for progress in (epochs["total"], epochs["current"]):
                progress["processed"] = progress["completed"] = progress["started"]
            _zeroed(batches["current"])
            batches["is_last_batch"] = False
            _zeroed(scheduler)
            for progress in fit_loop.get("epoch_loop.automatic_optimization.optim_progress", {}).get("optimizer", {}).values():
                _zeroed(progress["current"])
            _zeroed(fit_loop.get("epoch_loop.manual_optimization.optim_step_progress", {}).get("current", {}))
            _zeroed(fit_loop.get("epoch_loop.val_loop.batch_progress", {}))
            if "epoch_loop.val_loop.batch_progress" in fit_loop:
                fit_loop["epoch_loop.val_loop.batch_progress"]["is_last_batch"] = False
            return f"at the start of epoch {epochs['current']['completed']}"
        if served < 1:
            return None
        for progress in (epochs["total"], epochs["current"]):
            progress["processed"] = progress["completed"] = progress["started"] - 1
        batches["total"]["completed"] -= 1
        batches["current"]["completed"] -= 1
        if served % max(int(accumulate_grad_batches), 1) == 0:  # that batch stepped the optimizer
            loop_state["_batches_that_stepped"] = int(loop_state["_batches_that_stepped"]) - 1
        return f"in epoch {epochs['current']['completed']} after its batch {served}"
    except (KeyError, TypeError, AttributeError):
        return None  # a layout of another Lightning version: left to Lightning


# --------------------------------------------------------------------------- gradient checkpointing


@contextlib.contextmanager
def _running_statistics_kept(module: torch.nn.Module):
    """Undo the BN running-statistics update of a recomputation: the forward already counted this batch."""
    layers = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    saved = [(bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()) for bn in layers]
    try:
        yield
    finally:
        with torch.no_grad():
            for bn, (mean, var, count) in zip(layers, saved):
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                bn.num_batches_tracked.copy_(count)


def checkpointed_stages(backbone: IResNet) -> list:
    """Stage callables for `IResNet.forward_stages` that keep only each residual block's input for
    the backward pass and recompute the block there (gradient checkpointing, torch.utils.checkpoint)."""

    def stage_forward(stage: torch.nn.Sequential):
        def run(x: torch.Tensor) -> torch.Tensor:
            for block in stage:
                x = checkpoint(block, x, use_reentrant=False,
                               context_fn=lambda block=block: (contextlib.nullcontext(), _running_statistics_kept(block)))
            return x
        return run

    return [stage_forward(stage) for stage in backbone.stages()]


# --------------------------------------------------------------------------- module


class FaceRecognitionModule(L.LightningModule):
    """iResNet backbone + margin head, trained with cross entropy on uint8 batches normalised on device.

    Args:
        num_classes: identities of the training set (linked from the datamodule by train_fr.py).
        arch: `iresnet18/34/50/100/200`, or `custom` with `layers` (blocks per stage).
        layers: blocks per stage (4 ints); overrides the named depth.
        widths: channels per stage (4 ints); default 64-128-256-512.
        num_features: embedding size.
        dropout: dropout before the embedding FC layer.
        margin: `arcface`, `cosface` or `combined`; `m1`, `m2`, `m3` override the preset's margins.
        s: logit scale.
        head: `full` (one class matrix per process, DDP-averaged) or `partial_fc` (class centres
            sharded over the ranks, distributed softmax; exact with `sample_rate` 1).
        sample_rate: `partial_fc` only: share of each shard's classes per step (positives always kept).
        margin_grad: `exact` (differentiate through the margin) or `straight_through` (arcface_torch:
            margin added without gradient, d logit / d cos = s everywhere).
        fp32_head: compute the class-centre matmul in float32 under mixed precision (arcface_torch's
            PartialFC_V2 with fp16=False); default: autocast decides (half precision).
        optimizer: `sgd` (momentum, insightface) or `adamw`.
        lr: peak learning rate (after warm-up).
        momentum: SGD momentum.
        weight_decay: applied to every trainable parameter, as insightface does.
        warmup_epochs: linear warm-up length in epochs (fractions allowed), stepped per optimizer step.
        schedule: decay after warm-up, per step: `poly` ((1 - progress) ** poly_power) or `cosine`.
        poly_power: exponent of the polynomial decay (default 2, insightface's earlier PolyScheduler;
            arcface_torch's current PolynomialLRWarmup: 1).
        min_lr_ratio: final learning rate as a fraction of `lr`.
        colour_order: channel order of the training images (`bgr` or `rgb`); linked from the
            datamodule and recorded in checkpoints, since a model only works with its own order.
        val_flip: add the embedding of the horizontally flipped image in validation (insightface).
        log_images: number of training images logged once to W&B (0 disables).
        clip_backbone_only: the Trainer's `gradient_clip_val` limits the backbone's gradient only
            (arcface_torch); default: backbone and head together (Lightning's behaviour). With a
            sharded head the norm is taken over all ranks' shards.
        gradient_checkpointing: recompute each residual block in the backward pass (less activation
            memory for large batches / deep nets, about one extra forward of compute).
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "iresnet50",
        layers: list[int] | None = None,
        widths: list[int] | None = None,
        num_features: int = 512,
        dropout: float = 0.0,
        margin: Literal["arcface", "cosface", "combined"] = "arcface",
        s: float = 64.0,
        m1: float | None = None,
        m2: float | None = None,
        m3: float | None = None,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        warmup_epochs: float = 0.0,
        schedule: Literal["poly", "cosine"] = "poly",
        poly_power: float = 2.0,
        min_lr_ratio: float = 0.0,
        colour_order: Literal["bgr", "rgb"] = "bgr",
        val_flip: bool = True,
        log_images: int = 16,
        head: Literal["full", "partial_fc"] = "full",
        sample_rate: float = 1.0,
        margin_grad: Literal["exact", "straight_through"] = "exact",
        fp32_head: bool = False,
        clip_backbone_only: bool = False,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        if arch == "custom" and layers is None:
            raise ValueError("arch='custom' needs `layers` (blocks per stage, e.g. [1, 2, 2, 1])")
        if arch != "custom" and arch not in ARCHITECTURES:
            raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHITECTURES)} or 'custom'")
        for name, value in (("layers", layers), ("widths", widths)):
            if value is not None and (len(value) != 4 or min(value) < 1):
                raise ValueError(f"{name} must be 4 positive integers (one per stage), got {value}")
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        if schedule not in ("poly", "cosine"):
            raise ValueError(f"schedule must be 'poly' or 'cosine', got {schedule!r}")
        if colour_order not in ("bgr", "rgb"):
            raise ValueError(f"colour_order must be 'bgr' or 'rgb', got {colour_order!r}")
        self.save_hyperparameters()
        self.backbone = build_iresnet(
            arch, num_features=num_features, dropout=dropout,
            widths=tuple(widths) if widths is not None else None, layers=tuple(layers) if layers is not None else None,
        )
        self.head = build_head(margin, num_features, num_classes, s=s, m1=m1, m2=m2, m3=m3, head=head,
                               sample_rate=sample_rate, margin_grad=margin_grad, fp32=fp32_head)
        self._checkpointed_stages = checkpointed_stages(self.backbone) if gradient_checkpointing else None
        self.bn_recalibration: dict | None = None  # set by BNRecalibration, recorded in checkpoints
        self._collectors: dict[int, EmbeddingCollector] = {}
        self._last_batch_end: float | None = None
        self._images_logged = False

    # -- metadata
    def backbone_metadata(self) -> dict:
        """Everything needed to rebuild and feed the backbone; plain types only (weights_only loading)."""
        return {
            "arch": str(self.hparams.arch),
            "layers": [int(v) for v in self.backbone.layers_per_stage],
            "widths": [int(v) for v in self.backbone.widths],
            "num_features": int(self.backbone.num_features),
            "colour_order": str(self.hparams.colour_order),
            "normalization": {k: list(v) for k, v in NORMALIZATION.items()},
            "input_size": INPUT_SIZE,
            "margin": {"name": str(self.hparams.margin), "s": self.head.s, "m1": self.head.m1, "m2": self.head.m2, "m3": self.head.m3},
            "num_classes": int(self.hparams.num_classes),
            "bn_recalibration": None if self.bn_recalibration is None else dict(self.bn_recalibration),
        }

    def configure_model(self) -> None:
        """Allocate this rank's partial-FC shard once the process group exists (Lightning calls this
        before restoring a checkpoint and before wrapping the module in DDP; `load_from_checkpoint` too)."""
        if not isinstance(self.head, PartialFCHead) or self.head.is_sharded:
            return
        if self._trainer is not None:
            if isinstance(self.trainer.strategy.launcher, _MultiProcessingLauncher):
                raise ValueError("head='partial_fc' needs strategy 'ddp' (processes started by Lightning, torchrun or "
                                 "SLURM): ddp_spawn/ddp_fork copy rank 0's weights into the main process, and rank 0 "
                                 "holds only its share of the class centres")
            rank, world_size = self.trainer.global_rank, self.trainer.world_size
        elif dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        else:
            rank, world_size = 0, 1
        self.head.shard_(rank, world_size)
        # Each rank's shard is its own parameter: DDP must neither broadcast nor average it.
        self._ddp_params_and_buffers_to_ignore = ["head.weight"]

    def _optimized_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def _head_state_index(self) -> int:
        """Index of the head's weight in the optimizer state dict (parameters are numbered in order)."""
        return next(i for i, p in enumerate(self._optimized_parameters()) if p is self.head.weight)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Backbone metadata, the loggers' run versions and, for a sharded head, all ranks' centres
        and their optimizer state gathered into the one file rank 0 writes (collective under DDP)."""
        checkpoint[METADATA_KEY] = self.backbone_metadata()
        checkpoint[RUN_KEY] = {"logger_versions": [logger.version for logger in self.loggers]}
        if not isinstance(self.head, PartialFCHead) or self.head.world_size == 1:
            return
        gather = self.head.gather_rows_to_rank0
        checkpoint["state_dict"]["head.weight"] = gather(self.head.weight)
        index, rows = self._head_state_index(), self.head.weight.shape[0]
        for optimizer_state in checkpoint.get("optimizer_states", []):
            state = optimizer_state["state"].get(index)
            if state:  # a new dict: the inner dicts are the optimizer's live state
                optimizer_state["state"][index] = {
                    key: gather(value) if torch.is_tensor(value) and value.dim() and value.shape[0] == rows else value
                    for key, value in state.items()
                }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get(METADATA_KEY) or {}
        self.bn_recalibration = meta.get("bn_recalibration")
        fit_loop = (checkpoint.get("loops") or {}).get("fit_loop")
        if self._trainer is not None and isinstance(fit_loop, dict):  # a resume: the loops are restored after this hook
            where = resume_between_batches(fit_loop, self.trainer.accumulate_grad_batches)
            if where is not None:
                rank_zero_info(f"Resuming {where}")
        if isinstance(self.head, PartialFCHead):  # the weight re-shards itself; its optimizer state is cut here
            index = self._head_state_index()
            for optimizer_state in checkpoint.get("optimizer_states", []):
                state = optimizer_state["state"].get(index)
                if state:
                    optimizer_state["state"][index] = {
                        key: self.head.local_rows(value) if torch.is_tensor(value) and value.dim() else value
                        for key, value in state.items()
                    }

    # -- forward
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, 112, 112] in `colour_order` -> embeddings [B, num_features]."""
        if self._checkpointed_stages is not None and self.training and torch.is_grad_enabled():
            return self.backbone.forward_stages(normalize(images), stages=self._checkpointed_stages)[0]
        return self.backbone(normalize(images))

    def embed(self, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """L2-normalised float32 embeddings; with `flip`, of the sum with the mirrored image's."""
        x = normalize(images)
        embedding = self.backbone(x).float()
        if flip:
            embedding = embedding + self.backbone(torch.flip(x, dims=[3])).float()
        return F.normalize(embedding, dim=1)

    # -- training
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        embeddings = self(images)
        if isinstance(self.head, PartialFCHead) and self.head.world_size > 1 and embeddings.requires_grad:
            # Every rank's partial-FC loss is the loss of the global batch, and DDP averages the
            # backbone's gradient over the ranks: scale it back (arcface_torch does it in its all-gather).
            world_size = self.head.world_size
            embeddings.register_hook(lambda grad: grad * world_size)
        loss, accuracy = self.head.loss_and_accuracy(embeddings, labels)
        batch_size = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size)
        self.log("train/acc", accuracy, on_step=True, on_epoch=True, batch_size=batch_size)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=batch_size)
        return loss

    def on_train_epoch_start(self) -> None:
        self._last_batch_end = None  # the first step of an epoch includes worker start-up

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if not self._images_logged and self.hparams.log_images > 0:
            self._images_logged = True
            self._log_sample_images(batch)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Throughput in images/s over all processes, wall time between consecutive batch ends
        (so data loading counts: it is what the GPUs wait for)."""
        now = time.perf_counter()
        if self._last_batch_end is not None:
            images = batch[0].shape[0] * self.trainer.world_size
            self.log("train/throughput", images / max(now - self._last_batch_end, 1e-9), on_step=True, on_epoch=False,
                     prog_bar=True, batch_size=batch[0].shape[0])
        self._last_batch_end = now

    def _log_sample_images(self, batch: Any) -> None:
        from lightning.pytorch.loggers import WandbLogger

        loggers = [lg for lg in self.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        images, labels = batch
        count = min(int(self.hparams.log_images), images.shape[0])
        pictures = images[:count].detach().cpu().permute(0, 2, 3, 1).numpy()
        if self.hparams.colour_order == "bgr":
            pictures = pictures[..., ::-1]  # W&B shows RGB
        for logger in loggers:
            logger.log_image(
                key="train/samples",
                images=[np.ascontiguousarray(p) for p in pictures],
                caption=[f"label {int(v)}" for v in labels[:count]],
            )

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        params = self._optimized_parameters()
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("the LR schedule needs a finite run: set trainer.max_epochs or trainer.max_steps")
        if not math.isfinite(self.trainer.num_training_batches):
            # Only max_steps given: estimated_stepping_batches did not build the loader, but the
            # warm-up (in epochs) needs the epoch length.
            self.trainer.fit_loop.setup_data()
        batches = self.trainer.num_training_batches
        if math.isfinite(batches) and batches > 0:
            steps_per_epoch = max(1, math.ceil(batches / self.trainer.accumulate_grad_batches))
        else:
            steps_per_epoch = max(1, int(total) // max(self.trainer.max_epochs or 1, 1))
        warmup = int(round(hp.warmup_epochs * steps_per_epoch))
        schedule = WarmupSchedule(warmup, int(total), hp.schedule, hp.poly_power, hp.min_lr_ratio)
        scheduler = RunLengthLambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip the backbone's gradient, or the backbone's and the head's (`clip_backbone_only`).

        Gradients are already unscaled under 16-mixed. The norm of a sharded head is summed
        over the ranks, so every rank scales its backbone gradient by the same factor.
        """
        if not gradient_clip_val:
            return
        parts = [list(self.backbone.parameters())] + ([] if self.hparams.clip_backbone_only else [list(self.head.parameters())])
        grads = [[p.grad for p in params if p.grad is not None] for params in parts]
        if gradient_clip_algorithm == "value":  # element-wise: the same on shards as on the whole matrix
            torch.nn.utils.clip_grad_value_([p for params in parts for p in params], gradient_clip_val)
            return
        squares = [sum((g.detach().float().square().sum() for g in part), torch.zeros((), device=self.device)) for part in grads]
        if len(squares) == 2 and isinstance(self.head, PartialFCHead) and self.head.world_size > 1:
            dist.all_reduce(squares[1])
        scale = (gradient_clip_val / (sum(squares).sqrt() + 1e-6)).clamp(max=1.0)  # torch.nn.utils.clip_grad_norm_'s rule
        for g in (g for part in grads for g in part):
            g.mul_(scale.to(g.dtype))

    # -- validation
    def _collector(self, dataloader_idx: int) -> EmbeddingCollector:
        collector = self._collectors.get(dataloader_idx)
        if collector is None:
            collector = self._collectors[dataloader_idx] = EmbeddingCollector().to(self.device)
        return collector

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        indices, images = batch
        self._collector(dataloader_idx).update(indices, self.embed(images, flip=bool(self.hparams.val_flip)))

    def on_validation_epoch_end(self) -> None:
        loaders = self.trainer.val_dataloaders
        loaders = [] if loaders is None else (list(loaders) if isinstance(loaders, (list, tuple)) else [loaders])
        accuracies = []
        for idx, loader in enumerate(loaders):
            collector = self._collectors.get(idx)
            dataset = loader.dataset
            if collector is None or not hasattr(dataset, "pairs"):
                continue
            indices, embeddings = collector.compute()
            collector.reset()
            num_images = len(dataset)
            table = torch.zeros(num_images, embeddings.shape[1], device=embeddings.device)
            present = torch.zeros(num_images, dtype=torch.bool, device=embeddings.device)
            table[indices] = embeddings  # DistributedSampler padding repeats an index with the same embedding
            present[indices] = True
            metrics = verification_metrics(table, present, dataset.pairs, dataset.issame)
            if metrics is None:
                continue
            name = getattr(dataset, "name", f"set{idx}")
            # Every process holds the gathered embeddings, so the values agree: no sync needed.
            self.log(f"val/{name}/acc", metrics["acc"], add_dataloader_idx=False)
            self.log(f"val/{name}/tar@fmr1e-3", metrics["tar@fmr1e-3"], add_dataloader_idx=False)
            accuracies.append(metrics["acc"])
        if accuracies:
            self.log("val/mean_acc", float(np.mean(accuracies)), prog_bar=True, add_dataloader_idx=False)
