"""Face-recognition training (iResNet + margin softmax) as a LightningModule, with verification metrics.

Why this exists in a quality-assessment project: GraFIQs reads the BatchNorm running
statistics of a trained face-recognition network, so the project must be able to train
(small, CPU-sized) iResNets itself, record how their inputs were prepared (channel order,
normalisation) and re-estimate their BN statistics exactly (`grafiqs.lit.callbacks`).

Every init argument is a plain type, so LightningCLI / YAML configure the module and the
hyper-parameters stored in checkpoints load with `torch.load(weights_only=True)`.
Gradient clipping, mixed precision, DDP and SyncBatchNorm are Trainer flags (see the configs).

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

import math
import time
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from grafiqs.data.decode import INPUT_SIZE, NORMALIZATION, normalize
from grafiqs.evaluation.edc import threshold_at_fmr
from grafiqs.models.heads import build_head
from grafiqs.models.iresnet import ARCHITECTURES, build_iresnet
from grafiqs.models.loading import METADATA_KEY

FMR_TARGET = 1e-3


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
        optimizer: `sgd` (momentum, insightface) or `adamw`.
        lr: peak learning rate (after warm-up).
        momentum: SGD momentum.
        weight_decay: applied to every trainable parameter, as insightface does.
        warmup_epochs: linear warm-up length in epochs (fractions allowed), stepped per optimizer step.
        schedule: decay after warm-up, per step: `poly` ((1 - progress) ** poly_power) or `cosine`.
        poly_power: exponent of the polynomial decay (insightface: 2).
        min_lr_ratio: final learning rate as a fraction of `lr`.
        colour_order: channel order of the training images (`bgr` or `rgb`); linked from the
            datamodule and recorded in checkpoints, since a model only works with its own order.
        val_flip: add the embedding of the horizontally flipped image in validation (insightface).
        log_images: number of training images logged once to W&B (0 disables).
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
        self.head = build_head(margin, num_features, num_classes, s=s, m1=m1, m2=m2, m3=m3)
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

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[METADATA_KEY] = self.backbone_metadata()
        hparams = checkpoint.get("hyper_parameters")
        if isinstance(hparams, dict):  # extra keys are ignored by load_from_checkpoint (no **kwargs)
            hparams["normalization"] = {k: list(v) for k, v in NORMALIZATION.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get(METADATA_KEY) or {}
        self.bn_recalibration = meta.get("bn_recalibration")

    # -- forward
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, 112, 112] in `colour_order` -> embeddings [B, num_features]."""
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
        logits = self.head(self(images), labels)
        loss = F.cross_entropy(logits.float(), labels)
        batch_size = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == labels).float().mean()
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
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("the LR schedule needs a finite run: set trainer.max_epochs or trainer.max_steps")
        batches = self.trainer.num_training_batches
        if math.isfinite(batches) and batches > 0:
            steps_per_epoch = max(1, math.ceil(batches / self.trainer.accumulate_grad_batches))
        else:
            steps_per_epoch = max(1, int(total) // max(self.trainer.max_epochs or 1, 1))
        warmup = int(round(hp.warmup_epochs * steps_per_epoch))
        schedule = WarmupSchedule(warmup, int(total), hp.schedule, hp.poly_power, hp.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

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
