"""Lightning wrapper that runs the GraFIQs scorer in `predict_step` (the math lives in grafiqs.quality)."""
from __future__ import annotations

import time

import lightning as L
import torch
from torch import nn

from grafiqs.data.decode import normalize
from grafiqs.hardware import CompileChoice
from grafiqs.quality.scorer import GROUPS, GraFIQsScorer


class GraFIQsModule(L.LightningModule):
    """Scores batches from `collate_images`; the Trainer must run with `inference_mode=False`.

    Lightning runs predict under `no_grad` (and under gloo DDP always), so the
    scorer enables gradients itself; under `inference_mode` nothing could.
    `compile_choice` (grafiqs.hardware.CompileChoice) picks eager or compiled stages per batch
    and is told how long each batch took; without it the stages run eagerly. `face_check`
    (grafiqs.faces.check.FaceCheck) adds each crop's face_probability and alignment_error.
    """

    def __init__(self, backbone: nn.Module, groups: tuple[str, ...] = GROUPS, precision: str = "32",
                 return_embeddings: bool = False, compile_choice: CompileChoice | None = None,
                 channels_last: bool = False, face_check: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.face_check = face_check
        self.compile_choice = compile_choice
        compile = {"on": True, "off": False, "auto": "auto"}[compile_choice.mode] if compile_choice else False
        self.scorer = GraFIQsScorer(backbone, groups, precision=precision, channels_last=channels_last, compile=compile)
        self.return_embeddings = return_embeddings

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        prediction = {"index": batch["index"].cpu(), "errors": batch["errors"], "resized": batch["resized"].cpu()}
        if len(batch["index"]) == 0:
            return prediction | {"scores": {}, "bns_loss": torch.empty(0)}
        if torch.is_inference_mode_enabled():
            raise RuntimeError("GraFIQs needs gradients: create the Trainer with inference_mode=False")
        compiled = bool(self.compile_choice and self.compile_choice.compiled_next())
        self.scorer.engine.use_compiled = compiled
        started = time.perf_counter()
        result = self.scorer(normalize(batch["image"]))
        prediction |= {
            "scores": {group: values.cpu() for group, values in result.scores.items()},  # .cpu() waits for a GPU
            "bns_loss": result.bns_loss.cpu(),
            "status": result.status.cpu(),
        }
        if self.compile_choice:
            self.compile_choice.observe(compiled, len(batch["index"]), time.perf_counter() - started)
        if self.return_embeddings:  # the same forward's FR embedding, for same-model verification
            prediction["embedding"] = result.embedding.float().cpu()
        if self.face_check is not None:  # is it an aligned face at all? O-Net on the crop as scored
            prediction["face_probability"], prediction["alignment_error"] = self.face_check(batch["image"])
        return prediction

    def on_predict_end(self) -> None:
        if self.compile_choice:
            self.compile_choice.finish()


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
