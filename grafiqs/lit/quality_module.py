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

    def __init__(self, backbone: nn.Module, groups: tuple[str, ...] = GROUPS, precision: str = "32"):
        super().__init__()
        self.backbone = backbone
        self.scorer = GraFIQsScorer(backbone, groups, precision=precision)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        prediction = {"index": batch["index"].cpu(), "errors": batch["errors"], "resized": batch["resized"].cpu()}
        if len(batch["index"]) == 0:
            return prediction | {"scores": {}, "bns_loss": torch.empty(0)}
        if torch.is_inference_mode_enabled():
            raise RuntimeError("GraFIQs needs gradients: create the Trainer with inference_mode=False")
        result = self.scorer(normalize(batch["image"]))
        return prediction | {
            "scores": {group: values.cpu() for group, values in result.scores.items()},
            "bns_loss": result.bns_loss.cpu(),
        }
