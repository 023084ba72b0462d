"""Image decoding and preprocessing with the exact semantics of the official GraFIQs script.

The official `extract_grafiqs.py` reads with `cv2.imread` (8-bit, 3-channel BGR: gray
is replicated, alpha dropped, 16-bit scaled down), optionally converts BGR->RGB, makes
a uint8 CHW tensor, resizes it to 112x112 with antialiased bilinear interpolation of
the uint8 values, scales to [0, 1] and normalises with mean 0.5, std 0.5.
This module is the single place where that happens, for scoring, training and evaluation.
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from grafiqs.errors import ImageError, ReadError
from grafiqs.io.reading import open_regular

INPUT_SIZE = 112
# libjpeg's warnings that the scan data is damaged and was filled in (others, e.g. an unknown JFIF revision, are benign)
CORRUPT_DATA_WARNINGS = ("Corrupt JPEG data", "Premature end of JPEG file", "Invalid SOS parameters", "Inconsistent progression")
# Refuse larger images before decoding them (decompression bombs); an aligned crop is 112x112.
MAX_PIXELS = 64_000_000
# Refuse larger files before reading them: 64 megapixels of uncompressed 16-bit RGB TIFF fit.
MAX_FILE_BYTES = 512 * 2**20


def decode_image(data: bytes, bgr2rgb: bool = False, source: str = "image") -> np.ndarray:
    """Encoded bytes -> uint8 HxWx3 array in BGR (default, as cv2) or RGB order.

    OpenCV's IMREAD_COLOR, as the official cv2.imread: gray is replicated, alpha dropped,
    16-bit scaled to 8-bit, CMYK converted, and the EXIF orientation applied.
    """
    if not data:
        raise ImageError(f"{source}: empty file")
    pixels = _header_pixels(data, source)
    if pixels is not None and pixels > MAX_PIXELS:
        raise ImageError(f"{source}: {pixels} pixels exceed the limit of {MAX_PIXELS}; crop and align faces first")
    if data[:2] == b"\xff\xd8" and not jpeg_is_complete(data):
        # libjpeg would fill the missing rows with gray and only warn: a score of half an image is wrong.
        raise ImageError(f"{source}: truncated JPEG (no end-of-image marker)")
    try:
        if data[:2] == b"\xff\xd8":
            with _decoder_warnings() as lines:
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            warnings = [line for line in lines if line.startswith(CORRUPT_DATA_WARNINGS)]
            if warnings and image is not None:
                # libjpeg repairs corrupt scan data with made-up pixels and only warns, without naming the file
                raise ImageError(f"{source}: corrupt JPEG data ({warnings[0][:200]}); the decoded pixels are not the photo's")
        else:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as error:  # e.g. a header claiming sizes beyond OpenCV's own limits (found by fuzzing)
        reason = str(error).strip().splitlines()[-1][:200]
        raise ImageError(f"{source}: not a decodable image (OpenCV refused it: {reason})") from None
    if image is None:
        raise ImageError(f"{source}: not a decodable image (unknown format or corrupt data)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr2rgb else image


@contextlib.contextmanager
def _decoder_warnings():
    """The lines a C decoder writes to stderr inside the block (libjpeg's warnings), captured in a list."""
    lines: list[str] = []
    if not hasattr(os, "memfd_create"):
        yield lines
        return
    capture, saved = os.memfd_create("decoder-warnings"), os.dup(2)
    try:
        os.dup2(capture, 2)
        yield lines
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        lines += os.pread(capture, 4096, 0).decode("utf-8", "replace").splitlines()
        os.close(capture)


def _header_pixels(data: bytes, source: str) -> int | None:
    """Width x height from the file header without decoding pixels (None if the header is unknown)."""
    from PIL import Image  # Pillow reads headers lazily; it arrives with matplotlib

    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except Image.DecompressionBombError:  # Pillow's own limit (about 179 MP) is far above ours
        raise ImageError(f"{source}: more than twice Pillow's {Image.MAX_IMAGE_PIXELS} pixels, beyond the limit of "
                         f"{MAX_PIXELS}; crop and align faces first") from None
    except Exception:  # not a format Pillow knows: OpenCV's own limit still applies
        return None
    return width * height


def jpeg_is_complete(data: bytes) -> bool:
    """True if the JPEG's marker structure reaches its end-of-image marker (bytes after it are allowed,
    as libjpeg ignores them). Walks the segments: length-prefixed headers are skipped whole, so an EXIF
    thumbnail's own markers are never mistaken for the image's; entropy-coded data after a start-of-scan
    ends at the first 0xFF that is neither byte stuffing (FF 00) nor a restart marker (FF D0-D7)."""
    position, size = 2, len(data)
    while position + 1 < size:
        if data[position] != 0xFF:
            return False  # not at a marker: corrupt structure
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker == 0xD9:
            return True
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            position += 2
            continue
        if position + 3 >= size:
            return False
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xDA:  # start of scan: skip the entropy-coded data
            while True:
                position = data.find(b"\xff", position)
                if position < 0 or position + 1 >= size:
                    return False
                following = data[position + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    position += 2
                else:
                    break
    return False


def read_file_bytes(path: str | Path) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file and its stat, read with a size limit; anything else is an ImageError.

    Through the one check of every read (`grafiqs.io.reading.open_regular`): non-blocking, so a FIFO or
    device named like an image is refused at once; type and size come from the opened file itself.
    """
    try:
        with open_regular(path, "image", MAX_FILE_BYTES) as file:
            info = os.fstat(file.fileno())
            data = file.read(MAX_FILE_BYTES + 1)
    except ReadError as error:
        raise ImageError(_unreadable_image(path, error.reason)) from None
    except OSError as error:
        raise ImageError(f"{path}: cannot be read ({error.strerror or error})") from None
    if len(data) > MAX_FILE_BYTES:  # grew while being read
        raise ImageError(f"{path}: more than {MAX_FILE_BYTES} bytes; crop and align faces first")
    return data, info


def _unreadable_image(path, reason: str) -> str:
    if reason.startswith("not a regular file"):
        return f"{path}: {reason}; only image files are read"
    if "exceed the limit" in reason:
        return f"{path}: {reason}; crop and align faces first"
    return f"{path}: cannot be read ({'No such file or directory' if reason == 'not found' else reason})"


def read_image(path: str | Path, bgr2rgb: bool = False) -> np.ndarray:
    return decode_image(read_file_bytes(path)[0], bgr2rgb, source=str(path))


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
