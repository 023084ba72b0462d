"""Lightning wrapper that runs the GraFIQs scorer in `predict_step` (the math lives in grafiqs.quality)."""
from __future__ import annotations

import lightning as L
import torch
from torch import nn

from grafiqs.data.decode import normalize
from grafiqs.quality.scorer import GROUPS, GraFIQsScorer


class GraFIQsModule(L.LightningModule):
    """Scores batches from `collate_images`; the Trainer must run with `inference_mode=False`.

    Lightning runs predict under `no_grad` (and under gloo DDP always), so the
    scorer enables gradients itself; under `inference_mode` nothing could.
    """

    def __init__(self, backbone: nn.Module, groups: tuple[str, ...] = GROUPS, precision: str = "32",
                 return_embeddings: bool = False, compile: bool = False, channels_last: bool = False):
        super().__init__()
        self.backbone = backbone
        self.scorer = GraFIQsScorer(backbone, groups, precision=precision, channels_last=channels_last, compile=compile)
        self.return_embeddings = return_embeddings

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        prediction = {"index": batch["index"].cpu(), "errors": batch["errors"], "resized": batch["resized"].cpu()}
        if len(batch["index"]) == 0:
            return prediction | {"scores": {}, "bns_loss": torch.empty(0)}
        if torch.is_inference_mode_enabled():
            raise RuntimeError("GraFIQs needs gradients: create the Trainer with inference_mode=False")
        result = self.scorer(normalize(batch["image"]))
        prediction |= {
            "scores": {group: values.cpu() for group, values in result.scores.items()},
            "bns_loss": result.bns_loss.cpu(),
            "status": result.status.cpu(),
        }
        if self.return_embeddings:  # the same forward's FR embedding, for same-model verification
            prediction["embedding"] = result.embedding.float().cpu()
        return prediction


class VariantModule(L.LightningModule):
    """Every ablation column of a batch from `VariantScorer`, plus embeddings for verification.

    Batches are `(index, uint8 image)` from `VerificationImages`. `comparison` is an optional
    second network whose embeddings judge the pairs (the cross-model setting); without it the
    scored network's own embedding from the same forward pass is used (same-model setting).
    Precision, compile and channels_last are the scorer's (`VariantScorer(..., precision=...)`).
    """

    def __init__(self, scorer, comparison: nn.Module | None = None, swap_channels: bool = False):
        super().__init__()
        self.scorer = scorer
        self.backbone = scorer.model
        self.comparison = comparison.eval() if comparison is not None else None
        self.swap_channels = swap_channels  # the comparison network wants the other colour order

    def predict_step(self, batch, batch_idx: int) -> dict:
        if torch.is_inference_mode_enabled():
            raise RuntimeError("GraFIQs needs gradients: create the Trainer with inference_mode=False")
        indices, images = batch
        result = self.scorer(normalize(images))  # enables gradients itself
        prediction = {
            "index": indices.cpu(),
            "columns": {name: values.detach().cpu() for name, values in result.columns.items()},
            "status": result.status.cpu(),
            "embedding": result.embedding.cpu(),
            "seconds": result.seconds,
        }
        if self.comparison is not None:
            inputs = images.flip(1) if self.swap_channels else images
            with torch.no_grad():
                prediction["embedding"] = self.comparison(normalize(inputs)).float().cpu()
        return prediction
