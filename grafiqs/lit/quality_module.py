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


class PassModule(L.LightningModule):
    """One per-image pass of the benchmark runner: `compute(normalised images)` -> {name: [B] or [B, D] tensor}.

    Batches are `collate_images`' (grafiqs.data.folders). `compute` is any of the runner's passes:
    the GraFIQs variant grid (`VariantScorer`), a baseline FIQA method, or the embeddings of an FR
    model that judges the pairs. Gradients are enabled for it (the Trainer must run with
    `inference_mode=False`); a pass that needs none turns them off itself.
    """

    def __init__(self, backbone: nn.Module, compute):
        super().__init__()
        self.backbone = backbone
        self.compute = compute

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        prediction = {"index": batch["index"].cpu(), "errors": batch["errors"], "outputs": {}}
        if len(batch["index"]) == 0:
            return prediction
        if torch.is_inference_mode_enabled():
            raise RuntimeError("GraFIQs needs gradients: create the Trainer with inference_mode=False")
        with torch.enable_grad():
            outputs = self.compute(normalize(batch["image"]))
        prediction["outputs"] = {name: values.detach().float().cpu() for name, values in outputs.items()}
        return prediction
