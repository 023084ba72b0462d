"""Degradations of known type and severity: `DEGRADATIONS`, `SEVERITY_TABLE`, `degrade`.

A new degradation goes here: its name at the end of DEGRADATIONS (the index of a kind is part of
the probe seeds, see probes.py), its three parameters in SEVERITY_TABLE, and its transform in
`_albumentations` or a function of its own called from `degrade` (as occlusion's `_occlude`).
"""
from __future__ import annotations

import cv2
import numpy as np

from grafiqs.synthetic.seeds import _TAG_DEGRADE

DEGRADATIONS = ("blur", "noise", "jpeg", "downscale", "occlusion", "dark", "bright")

# Fixed parameter per severity 1, 2, 3 (severity 0 is always the unchanged image).
SEVERITY_TABLE: dict[str, tuple] = {
    "blur": (1.5, 3.0, 5.0),  # Gaussian sigma in pixels (kernel int(3.5 sigma) * 2 + 1)
    "noise": (0.04, 0.08, 0.16),  # Gaussian noise std as a fraction of 255: ~10, 20, 41 grey levels, per channel
    "jpeg": (30, 15, 5),  # JPEG quality
    "downscale": (0.5, 0.25, 0.125),  # scale factor: INTER_AREA down, bilinear back up
    "occlusion": ("one eye", "both eyes", "eyes + lower face"),  # textured occluder, see _OCCLUDERS
    "dark": (0.45, 0.25, 0.12),  # exposure multiplier
    "bright": (1.6, 2.2, 3.0),  # exposure multiplier, clipped at 255 (saturation)
}

# Occluders in canonical 112x112 coordinates (scaled to other sizes): x0, y0, x1, y1 rectangles.
_OCCLUDERS = {
    1: ((24, 38, 54, 64),),  # one eye (left or right, chosen by the seed)
    2: ((14, 37, 98, 64),),  # band over both eyes (sunglasses, a bar)
    3: ((14, 37, 98, 64), (22, 68, 90, 112)),  # eyes plus a mask over nose, mouth and chin
}


def _albumentations(kind: str, severity: int, seed: int):
    import albumentations as A  # imported lazily: only degradations need it

    value = SEVERITY_TABLE[kind][severity - 1]
    if kind == "blur":
        t = A.GaussianBlur(blur_limit=0, sigma_limit=(value, value), p=1.0)
    elif kind == "noise":
        t = A.GaussNoise(std_range=(value, value), mean_range=(0.0, 0.0), per_channel=True, p=1.0)
    elif kind == "jpeg":
        t = A.ImageCompression(compression_type="jpeg", quality_range=(value, value), p=1.0)
    elif kind == "downscale":
        t = A.Downscale(scale_range=(value, value), interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}, p=1.0)
    elif kind in ("dark", "bright"):
        t = A.MultiplicativeNoise(multiplier=(value, value), per_channel=False, elementwise=False, p=1.0)
    else:
        raise AssertionError(kind)
    return A.Compose([t], seed=int(seed), strict=True)


def _occlude(image: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Textured opaque occluders over fixed face regions (seed: colour, texture, which eye)."""
    r = np.random.default_rng(np.random.SeedSequence([_TAG_DEGRADE, int(seed), severity]))
    h, w = image.shape[:2]
    out = image.astype(np.float32)
    color = r.uniform(10, 240, 3).astype(np.float32)
    texture = cv2.GaussianBlur(r.standard_normal((h, w)).astype(np.float32), (0, 0), r.uniform(0.5, 2.0))
    fill = color[None, None] * (1 + 0.15 * texture[..., None] / (texture.std() + 1e-6))
    mask = np.zeros((h, w), np.uint8)
    flip = severity == 1 and r.uniform() < 0.5
    for x0, y0, x1, y1 in _OCCLUDERS[severity]:
        if flip:
            x0, x1 = 112 - x1, 112 - x0
        cv2.rectangle(mask, (round(x0 * w / 112), round(y0 * h / 112)), (round(x1 * w / 112) - 1, round(y1 * h / 112) - 1), 255, -1)
    m = (mask > 0)[..., None]
    return np.clip(np.where(m, fill, out) + 0.5, 0, 255).astype(np.uint8)


def degrade(image: np.ndarray, kind: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply degradation `kind` at `severity` (0 unchanged copy, 1..3 increasingly strong), deterministic for `seed`.

    Severity table (values for severity 1 / 2 / 3; `SEVERITY_TABLE` holds them):

    ==========  ===========================================  ==============================
    kind        parameter                                    1 / 2 / 3
    ==========  ===========================================  ==============================
    blur        Gaussian sigma (px), kernel int(3.5s)*2+1    1.5 / 3 / 5
    noise       additive Gaussian std, per channel           0.04 / 0.08 / 0.16 x 255
    jpeg        JPEG quality                                 30 / 15 / 5
    downscale   scale factor (INTER_AREA down, linear up)    0.5 / 0.25 / 0.125
    occlusion   textured opaque occluder (112x112 coords)    one eye / eye band / eyes + lower face
    dark        exposure multiplier                          0.45 / 0.25 / 0.12
    bright      exposure multiplier, clipped                 1.6 / 2.2 / 3.0
    ==========  ===========================================  ==============================

    Everything except occlusion runs through albumentations 2.x (`A.Compose(..., seed, strict=True)`).
    """
    if kind not in SEVERITY_TABLE:
        raise ValueError(f"unknown degradation {kind!r}; choose one of {', '.join(DEGRADATIONS)}")
    if severity not in (0, 1, 2, 3):
        raise ValueError(f"severity must be 0, 1, 2 or 3, got {severity!r}")
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    if severity == 0:
        return image.copy()
    if kind == "occlusion":
        return _occlude(image, severity, seed)
    return _albumentations(kind, severity, seed)(image=image)["image"]
