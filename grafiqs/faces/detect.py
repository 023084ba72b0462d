"""MTCNN face detection (Zhang et al. 2016): three small networks in a cascade.

The weights are those the `facenet-pytorch` wheel ships (MIT licence, converted from the
original Caffe models). Only its weight files are read, never its modules: its pins of
torch, numpy and torchvision conflict with this project's, so it is installed with
`pip install --no-deps facenet-pytorch==2.6.0`.

Conventions of those weights: RGB input scaled as (x - 127.5) / 128; boxes inside the
cascade in MATLAB's 1-based inclusive pixel coordinates, landmarks out in 0-based ones;
the fully connected layers of R-Net and O-Net read their input flattened in (W, H, C)
order, a trace of the original models' column-major MATLAB images.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from grafiqs.errors import InputError

INSTALL_HINT = "pip install --no-deps facenet-pytorch==2.6.0 (or make setup)"


def face_probability(logits: torch.Tensor) -> torch.Tensor:
    """Softmax probability of class 1 (face) of two logits, as the sigmoid of their difference:
    the same value, and on P-Net's maps cheaper than a softmax over the channel dimension."""
    return torch.sigmoid(logits[:, 1] - logits[:, 0])


class PNet(nn.Module):
    """Proposal network: fully convolutional, one 12x12 window per output cell (stride 2)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / no face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), face_probability(self.conv4_1(x))


class RNet(nn.Module):
    """Refinement network on 24x24 crops."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), face_probability(self.dense5_1(x))


class ONet(nn.Module):
    """Output network on 48x48 crops: box offsets, five landmarks (x1..x5, y1..y5 relative to the box)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), face_probability(self.dense6_1(x))


def weights_folder() -> Path:
    """facenet-pytorch's data folder, found without importing the package (which needs torchvision)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    folder = Path(spec.submodule_search_locations[0]) / "data" if spec and spec.submodule_search_locations else None
    if folder is None or not all((folder / f"{name}.pt").is_file() for name in ("pnet", "rnet", "onet")):
        raise InputError(f"the MTCNN face detector's weights are missing: {INSTALL_HINT}")
    return folder


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union") -> torch.Tensor:
    """Greedy non-maximum suppression; indices of the kept boxes, best first.

    Overlap is intersection over union, or over the smaller box (`mode="min"`, which also
    drops a box lying inside a better one). Areas count pixels inclusively, as the cascade's boxes."""
    order = scores.argsort(descending=True)
    x1, y1, x2, y2 = boxes[order].unbind(1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    remaining = torch.arange(len(order), device=boxes.device)
    keep = []
    while len(remaining):
        best, rest = remaining[0], remaining[1:]
        keep.append(best)
        width = (torch.minimum(x2[best], x2[rest]) - torch.maximum(x1[best], x1[rest]) + 1).clamp(min=0)
        height = (torch.minimum(y2[best], y2[rest]) - torch.maximum(y1[best], y1[rest]) + 1).clamp(min=0)
        inter = width * height
        union = torch.minimum(areas[best], areas[rest]) if mode == "min" else areas[best] + areas[rest] - inter
        remaining = rest[inter / union <= threshold]
    return order[torch.stack(keep)] if keep else order[:0]


def regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Move each edge by its offset times the box's width or height."""
    size = (boxes[:, 2:4] - boxes[:, 0:2] + 1).repeat(1, 2)
    return boxes + offsets * size


def square(boxes: torch.Tensor) -> torch.Tensor:
    """The square on each box's centre with the longer side: the R/O-Net inputs are square.
    A box regressed inside out becomes a one-pixel square (whose crop then scores low)."""
    size = boxes[:, 2:4] - boxes[:, 0:2]
    side = size.max(dim=1, keepdim=True).values.clamp(min=1)
    corner = boxes[:, 0:2] + (size - side) / 2
    return torch.cat([corner, corner + side], dim=1)


class MTCNN(nn.Module):
    """The cascade with facenet-pytorch's defaults: smallest face 20 px, pyramid factor 0.709,
    thresholds 0.6 / 0.7 / 0.7."""

    def __init__(self, min_face_size: int = 20, factor: float = 0.709, thresholds=(0.6, 0.7, 0.7)):
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        self.min_face_size, self.factor, self.thresholds = min_face_size, factor, thresholds

    @classmethod
    def pretrained(cls, device: str | torch.device = "cpu") -> "MTCNN":
        folder = weights_folder()
        model = cls()
        for name in ("pnet", "rnet", "onet"):
            getattr(model, name).load_state_dict(torch.load(folder / f"{name}.pt", weights_only=True, map_location="cpu"))
        return model.to(device).eval()

    @property
    def device(self) -> torch.device:
        return self.pnet.conv1.weight.device

    def _tensor(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 NxHxWx3 or HxWx3 RGB -> normalised float NCHW on the networks' device."""
        batch = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device)
        batch = batch[None] if batch.dim() == 3 else batch
        return (batch.permute(0, 3, 1, 2).float() - 127.5) * 0.0078125

    def _scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales mapping the smallest face to P-Net's 12x12 window, down to a 12-pixel image."""
        scale, scales = 12.0 / self.min_face_size, []
        while min(height, width) * scale >= 12:
            scales.append(scale)
            scale *= self.factor
        return scales

    def _proposals(self, rgb: np.ndarray, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net on one pyramid level, after NMS: [N, 8] boxes in image pixels with their offsets, and scores."""
        height, width = rgb.shape[:2]
        level = cv2.resize(rgb, (math.ceil(width * scale), math.ceil(height * scale)), interpolation=cv2.INTER_AREA)
        offsets, probs = self.pnet(self._tensor(level))
        rows, cols = torch.nonzero(probs[0] >= self.thresholds[0], as_tuple=True)
        cells = torch.stack([cols, rows], dim=1).float()
        boxes = torch.cat([((2 * cells + 1) / scale).floor(), ((2 * cells + 12) / scale).floor()], dim=1)
        scores = probs[0, rows, cols]
        keep = nms(boxes, scores, 0.5)
        return torch.cat([boxes[keep], offsets[0][:, rows[keep], cols[keep]].T], dim=1), scores[keep]

    def _crops(self, rgb: np.ndarray, boxes: torch.Tensor, size: int) -> torch.Tensor:
        """Each box's pixels (zero outside the image) resized to size x size, as one batch."""
        height, width = rgb.shape[:2]
        crops = np.empty((len(boxes), size, size, 3), np.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.floor().long().tolist()):
            left, top = x1 - 1, y1 - 1  # 1-based inclusive -> 0-based half-open
            if left >= 0 and top >= 0 and x2 <= width and y2 <= height:
                patch = rgb[top:y2, left:x2]
            else:
                patch = np.zeros((y2 - top, x2 - left, 3), np.uint8)
                inside = rgb[max(top, 0) : min(y2, height), max(left, 0) : min(x2, width)]
                patch[max(-top, 0) : max(-top, 0) + inside.shape[0], max(-left, 0) : max(-left, 0) + inside.shape[1]] = inside
            crops[i] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
        return self._tensor(crops)

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 HxWx3 RGB -> boxes [N, 4] (x1, y1, x2, y2), scores [N], landmarks [N, 5, 2] (x, y),
        best score first. Landmarks: left eye, right eye, nose, left and right mouth corner
        (left = smaller x)."""
        nothing = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        levels = [self._proposals(rgb, scale) for scale in self._scales(*rgb.shape[:2])]
        if not levels:
            return nothing
        proposals, scores = torch.cat([p for p, _ in levels]), torch.cat([s for _, s in levels])
        keep = nms(proposals[:, :4], scores, 0.7)
        if not len(keep):
            return nothing
        boxes = square(regress(proposals[keep, :4], proposals[keep, 4:]))

        offsets, scores = self.rnet(self._crops(rgb, boxes, 24))
        passed = scores > self.thresholds[1]
        boxes, offsets, scores = boxes[passed], offsets[passed], scores[passed]
        keep = nms(boxes, scores, 0.7)
        if not len(keep):
            return nothing
        boxes = square(regress(boxes[keep], offsets[keep]))

        offsets, points, scores = self.onet(self._crops(rgb, boxes, 48))
        passed = scores > self.thresholds[2]
        boxes, offsets, points, scores = boxes[passed], offsets[passed], points[passed], scores[passed]
        size = boxes[:, 2:4] - boxes[:, 0:2] + 1
        landmarks = torch.stack([points[:, :5], points[:, 5:]], dim=2) * size[:, None] + boxes[:, None, 0:2] - 1
        boxes = regress(boxes, offsets)
        keep = nms(boxes, scores, 0.7, mode="min")
        return boxes[keep].cpu().numpy(), scores[keep].cpu().numpy(), landmarks[keep].cpu().numpy()
