"""Image decoding and preprocessing with the exact semantics of the official GraFIQs script.

The official `extract_grafiqs.py` reads with `cv2.imread` (8-bit, 3-channel BGR: gray
is replicated, alpha dropped, 16-bit scaled down), optionally converts BGR->RGB, makes
a uint8 CHW tensor, resizes it to 112x112 with antialiased bilinear interpolation of
the uint8 values, scales to [0, 1] and normalises with mean 0.5, std 0.5.
This module is the single place where that happens, for scoring, training and evaluation.
"""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from grafiqs.errors import ImageError

INPUT_SIZE = 112
# Refuse larger images before decoding them (decompression bombs); an aligned crop is 112x112.
MAX_PIXELS = 64_000_000


def decode_image(data: bytes, bgr2rgb: bool = False, source: str = "image") -> np.ndarray:
    """Encoded bytes -> uint8 HxWx3 array in BGR (default, as cv2) or RGB order.

    OpenCV's IMREAD_COLOR, as the official cv2.imread: gray is replicated, alpha dropped,
    16-bit scaled to 8-bit, CMYK converted, and the EXIF orientation applied.
    """
    if not data:
        raise ImageError(f"{source}: empty file")
    pixels = _header_pixels(data)
    if pixels is not None and pixels > MAX_PIXELS:
        raise ImageError(f"{source}: {pixels} pixels exceed the limit of {MAX_PIXELS}; crop and align faces first")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
        # libjpeg would fill the missing rows with gray and only warn: a score of half an image is wrong.
        raise ImageError(f"{source}: truncated JPEG (no end-of-image marker)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as error:  # e.g. a header claiming sizes beyond OpenCV's own limits (found by fuzzing)
        reason = str(error).strip().splitlines()[-1][:200]
        raise ImageError(f"{source}: not a decodable image (OpenCV refused it: {reason})") from None
    if image is None:
        raise ImageError(f"{source}: not a decodable image (unknown format or corrupt data)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr2rgb else image


def _header_pixels(data: bytes) -> int | None:
    """Width x height from the file header without decoding pixels (None if the header is unknown)."""
    from PIL import Image  # Pillow reads headers lazily; it arrives with matplotlib

    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except Exception:  # not a format Pillow knows: OpenCV's own limit still applies
        return None
    return width * height


def read_image(path: str | Path, bgr2rgb: bool = False) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ImageError(f"{path}: cannot be read ({error.strerror or error})") from None
    return decode_image(data, bgr2rgb, source=str(path))


def to_model_tensor(image: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 HxWx3 array -> uint8 3x size x size tensor, resized as torchvision resizes uint8 tensors."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if tensor.shape[1:] != (size, size):
        tensor = F.interpolate(tensor[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return tensor.contiguous()


# The insightface / official GraFIQs input normalisation, the same for every channel after scaling to
# [0, 1]; checkpoints of train_fr.py record it as NORMALIZATION.
_MEAN, _STD = 0.5, 0.5
NORMALIZATION = {"mean": [_MEAN] * 3, "std": [_STD] * 3}


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float in [-1, 1]: scale to [0, 1], then mean 0.5, std 0.5."""
    return (images.float() / 255.0 - _MEAN) / _STD
