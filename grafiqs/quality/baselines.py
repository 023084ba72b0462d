"""Training-free FIQA baselines that run on the same backbone as GraFIQs, behind one interface.

    method = SERFIQ(passes=100)
    quality = method(model, images)          # normalised images [B, 3, 112, 112] -> [B]
    method.orientation                       # "higher_is_better" | "lower_is_better" (grafiqs.evaluation.edc)

    serfiq          SER-FIQ, same-model variant (Terhörst et al., CVPR 2020)   higher is better
    embedding_norm  L2 norm of the unnormalised embedding (MagFace's quality)  higher is better
    faceqan         FaceQAN (Babnik, Peer, Štruc, ICPR 2022)                   higher is better
    bns_loss        the GraFIQs BN-statistics loss value itself                lower is better

Each method is a dataclass of its options, so a benchmark config (`methods.baselines.serfiq: {passes: 100}`)
is schema-checked by jsonargparse like every other section; invalid values raise InputError.
Every method puts the model in eval mode (BatchNorm uses its running statistics) and works on
whole batches. FaceQAN differentiates the input and bns_loss runs the GraFIQs scorer (which
freezes the weights, as score.py does); neither computes weight gradients.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from grafiqs.data.decode import NORMALIZATION
from grafiqs.errors import InputError
from grafiqs.evaluation.edc import Orientation
from grafiqs.quality.scorer import GraFIQsScorer

# Normalised units per unit of [0, 1] pixel intensity: FaceQAN's epsilon is given in [0, 1] pixels.
_NORMALISED_PER_PIXEL = 1.0 / NORMALIZATION["std"][0]


@runtime_checkable
class QualityMethod(Protocol):
    """What a benchmark runner needs of a FIQA method: a name, an orientation and a batched score."""

    name: str
    label: str  # the row name in a comparison table
    orientation: Orientation

    def __call__(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """[B] float scores of normalised images [B, 3, H, W]."""
        ...


@dataclass
class SERFIQ:
    """SER-FIQ, "same model" variant: robustness of the embedding under dropout.

    Recipe (Terhörst et al., CVPR 2020): T stochastic forward passes with dropout active on the
    embedding layer, the T embeddings L2-normalised, quality = 2 * sigmoid(-d) = 2 / (1 + exp(d))
    with d the mean Euclidean distance over the T(T-1)/2 pairs. Higher is better (at most 1).
    The authors' code can rescale the score with a further sigmoid for display; that is monotone,
    so it is not applied here.

    For iResNet the stochastic layer is `model.dropout`, right before `fc`. Its rate is the model's
    own when that is above 0; insightface models are trained with rate 0, and then the authors'
    rate 0.5 is used (`dropout` overrides both). Everything before the dropout is deterministic,
    so it runs once per image and only dropout -> fc -> features runs T times, batched: the same
    numbers as T full passes at a fraction of the cost. The T masks come from a generator seeded
    with `seed` and are the same for every image (the authors draw fresh ones per image; common
    masks make scores independent of batching and comparisons between images less noisy).
    Defaults: passes=100, dropout=None (model's rate, else 0.5), seed=0.
    """

    name: ClassVar[str] = "serfiq"
    label: ClassVar[str] = "SER-FIQ"
    orientation: ClassVar[Orientation] = "higher_is_better"
    AUTHORS_DROPOUT: ClassVar[float] = 0.5
    CHUNK_ELEMENTS: ClassVar[int] = 2**24  # dropped trunk features per matrix product (64 MiB in float32)

    passes: int = 100
    dropout: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.passes < 2:
            raise InputError(f"SER-FIQ needs at least 2 passes to compare embeddings, got {self.passes}")
        if self.dropout is not None and not 0 < self.dropout < 1:
            raise InputError(f"SER-FIQ dropout must lie in (0, 1), got {self.dropout}")

    def rate(self, model: nn.Module) -> float:
        """The dropout rate used for `model`."""
        if self.dropout is not None:
            return self.dropout
        return model.dropout.p if model.dropout.p > 0 else self.AUTHORS_DROPOUT

    def embeddings(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """[B, T, D] embeddings of the T stochastic passes (not normalised)."""
        if not all(hasattr(model, m) for m in ("dropout", "fc", "features")):
            raise InputError("SER-FIQ needs a model with `dropout`, `fc` and `features` modules (an iResNet)")
        model.eval()
        rate = self.rate(model)
        captured = []
        handle = model.dropout.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        try:
            with torch.no_grad():
                model(images)  # the deterministic trunk, once; eval-mode dropout leaves its input untouched
        finally:
            handle.remove()
        trunk = captured[0]  # [B, F]
        generator = torch.Generator(device=images.device).manual_seed(self.seed)
        # One mask per pass, drawn as nn.Dropout would for a single image and scaled as it does; shared
        # by the batch, so an image's score does not depend on which images share its batch.
        masks = torch.cat([torch.empty_like(trunk[:1]).bernoulli_(1 - rate, generator=generator)
                           for _ in range(self.passes)]).div_(1 - rate)  # [T, F]
        count, width = trunk.shape
        chunk = max(1, self.CHUNK_ELEMENTS // (count * width))
        passes = []
        with torch.no_grad():
            for part in masks.split(chunk):  # many passes in one matrix product: small products are slow
                dropped = (part[:, None] * trunk[None]).reshape(-1, width)
                passes.append(model.features(model.fc(dropped)).reshape(len(part), count, -1))
        return torch.cat(passes).transpose(0, 1)

    def __call__(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return robustness_quality(self.embeddings(model, images))


def robustness_quality(embeddings: torch.Tensor) -> torch.Tensor:
    """SER-FIQ's score of [B, T, D] stochastic embeddings: 2 / (1 + exp(mean pairwise distance))."""
    unit = F.normalize(embeddings.float(), dim=-1)
    # exact differences, not the |a|^2 + |b|^2 - 2ab shortcut, which loses the small distances
    distances = torch.cdist(unit, unit, compute_mode="donot_use_mm_for_euclid_dist")
    count = embeddings.shape[1]
    rows, columns = torch.triu_indices(count, count, offset=1, device=embeddings.device)
    mean_distance = distances[:, rows, columns].mean(dim=1)
    return 2 * torch.sigmoid(-mean_distance)


@dataclass
class EmbeddingNorm:
    """L2 norm of the unnormalised embedding (MagFace's quality). Higher is better.

    For iResNet that is the norm of the output of `features` (the BatchNorm1d after fc), i.e. of
    `model(images)`. The norm carries quality by design only in MagFace-trained models; for any
    other model it is reported as a baseline without that guarantee. No parameters.
    """

    name: ClassVar[str] = "embedding_norm"
    label: ClassVar[str] = "embedding norm (MagFace)"
    orientation: ClassVar[Orientation] = "higher_is_better"

    def __call__(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return model(images).float().norm(dim=1)


@dataclass
class FaceQAN:
    """FaceQAN: how hard it is to push an image's embedding away with adversarial noise. Higher is better.

    Recipe, as in the authors' code (github.com/LSIbabnikz/FaceQAN); defaults are theirs:
      1. y = embedding of the image, y_f = embedding of its horizontal flip; s_f = cos(y, y_f).
      2. k (`copies`=10) copies of the image, each plus uniform noise in [-eps, eps] (`epsilon`=1e-3).
      3. l (`steps`=5) BIM iterations: at each, the copies' cosine similarities to y are recorded,
         then every copy moves by eps * sign of the gradient of 1 - cos (away from y).
      4. S = all k * l recorded similarities; q_adv = (1 + mean S) / 2 * clip(1 - std S, 0, 1)
         (population std), Q = (q_adv * s_f) ** p with the integer p = `exponent` = 5 (an odd p
         keeps the order of a negative s_f, a fractional one would make it NaN).
    What the paper's notation leaves open, settled by the authors' code: S pools the similarities
    of every iteration, recorded before each step (so the first is the noise-only copy and the
    last step's result is never measured; that step is therefore skipped here); s_f is the raw
    cosine, not mapped to [0, 1]. epsilon is in [0, 1] pixel units as in their code (the images
    there are [0, 1] with normalisation inside the model), so it is doubled for our [-1, 1]
    inputs. Deliberate difference: copies are clamped to the valid image range [0, 1] in pixel
    units; their code clamps to [-1, 1] on [0, 1] images, which bounds nothing in practice.
    Noise comes from a generator seeded with `seed`. A batch of B images runs B * k copies
    through the model at once (forward and backward): choose B accordingly.
    """

    name: ClassVar[str] = "faceqan"
    label: ClassVar[str] = "FaceQAN"
    orientation: ClassVar[Orientation] = "higher_is_better"

    copies: int = 10
    steps: int = 5
    epsilon: float = 1e-3
    exponent: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.copies < 2 or self.steps < 1 or not 0 < self.epsilon < 1 or self.exponent < 1:
            raise InputError(f"FaceQAN needs copies >= 2, steps >= 1, 0 < epsilon < 1 and an integer exponent >= 1; got "
                             f"copies={self.copies}, steps={self.steps}, epsilon={self.epsilon}, exponent={self.exponent}")

    def components(self, model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B] tensors: `adversarial_mean`, `adversarial_std`, `flip_similarity` and `quality`."""
        model.eval()
        count, k = images.shape[0], self.copies
        step = self.epsilon * _NORMALISED_PER_PIXEL
        generator = torch.Generator(device=images.device).manual_seed(self.seed)
        images = images.detach().float()
        with torch.no_grad():
            clean, flipped = model(torch.cat([images, images.flip(-1)])).float().split(count)
        flip_similarity = F.cosine_similarity(clean, flipped, dim=1)

        target = clean.repeat_interleave(k, dim=0)  # copy j of image i sits at row i * k + j
        copies = images.repeat_interleave(k, dim=0)
        noise = torch.rand(copies.shape, generator=generator, device=images.device, dtype=copies.dtype)
        copies = (copies + (2 * noise - 1) * step).clamp(-1, 1)
        similarities = []
        for index in range(self.steps):
            last = index == self.steps - 1
            with torch.set_grad_enabled(not last):
                copies.requires_grad_(not last)
                similarity = F.cosine_similarity(model(copies).float(), target, dim=1)
            similarities.append(similarity.detach())
            if not last:
                # ascend 1 - cos: only the sign of the gradient matters, so summing over copies is fine
                (gradient,) = torch.autograd.grad(-similarity.sum(), copies)
                copies = (copies.detach() + step * gradient.sign()).clamp(-1, 1)
        pooled = torch.stack(similarities, dim=1).reshape(count, k * self.steps)
        mean, std = pooled.mean(dim=1), pooled.std(dim=1, correction=0)
        adversarial = (1 + mean) / 2 * (1 - std).clamp(0, 1)
        return {"adversarial_mean": mean, "adversarial_std": std, "flip_similarity": flip_similarity,
                "quality": (adversarial * flip_similarity) ** self.exponent}

    def __call__(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return self.components(model, images)["quality"]


@dataclass
class BNSLoss:
    """The GraFIQs BN-statistics loss of each image, as a quality score. Lower is better.

    The official loss (MSE of the per-channel means plus MSE of the variances against the running
    statistics, averaged over the BatchNorm2d layers), taken from `GraFIQsScorer`, not recomputed.
    The scorer needs one gradient group; block4 is the cheapest (its backward stops at block4).
    No parameters.
    """

    name: ClassVar[str] = "bns_loss"
    label: ClassVar[str] = "BNS loss"
    orientation: ClassVar[Orientation] = "lower_is_better"

    def __call__(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return GraFIQsScorer(model, groups=("block4",))(images).bns_loss


BASELINES: dict[str, type] = {method.name: method for method in (SERFIQ, EmbeddingNorm, FaceQAN, BNSLoss)}
