"""A cheap per-image check that a crop is an ArcFace-aligned face: MTCNN's O-Net on the 112x112 crop.

GraFIQs gives a number for anything 112x112 (a blank image, noise, a car, a resized full photo), and that
number means nothing unless the image is an aligned face. MTCNN's last network, O-Net (grafiqs/faces/detect.py,
facenet-pytorch's weights), takes a 48x48 window and returns a face probability and five landmarks. Here it
reads the crop itself, as scored, in three fixed windows (`FACE_WINDOWS`, in pixels of the 112 crop), and

- `face_probability` is the sigmoid of the mean of the three windows' face logits (a geometric mean of
  the odds: one window fooled by a texture does not decide);
- `alignment_error` is the mean distance, in pixels of the 112 crop, of the five landmarks (averaged over
  the windows) from the ArcFace template the alignment maps them to (grafiqs.faces.align.ARCFACE_TEMPLATE).

An image is flagged `not an aligned face?` when face_probability < MIN_FACE_PROBABILITY or alignment_error >
MAX_ALIGNMENT_ERROR. Why these windows and thresholds (measured, benchmarks/bench_face_check.py):

- The whole crop resized to 48x48 is not what O-Net was trained on: MTCNN's own O-Net input square on an
  ArcFace crop is ~92 px, centred ~6 px below the crop centre, and on the whole crop O-Net's probability is
  below 0.5 for 22-25% of clean faces. The three windows (one 96 px square, two 80 px squares lower down)
  were picked among squares of 80-112 px on golden crops, 300 synthetic faces (seed 0) and aligned astronaut
  crops against 69 non-faces (photos, noise, blank, drawn cars), then measured on other images
  (benchmarks/RESULTS.md, "Aligned-face check"): 4 of 348 faces flagged, 1 of 228 non-faces missed;
  strongly degraded faces are flagged too.
- 0.5: even odds, O-Net's own decision boundary (MTCNN's cascade keeps O-Net boxes above 0.7).
- 15 px: aligned faces stay below 12.5 px (golden crops, whose landmarks sit a little off O-Net's idea of the
  points: 7.5-12.5; synthetic and --align crops: 1.4-10.5), while a face shifted by 15-20 px or turned by
  30-45 degrees inside the crop lies at 15-23 px.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from grafiqs.errors import InputError
from grafiqs.faces.align import ARCFACE_TEMPLATE
from grafiqs.faces.detect import INSTALL_HINT, ONet

CROP_SIZE = 112
ONET_SIZE = 48
FACE_WINDOWS = ((8, 8, 104, 104), (16, 20, 96, 100), (16, 24, 96, 104))  # x0, y0, x1, y1 in the 112 crop
MIN_FACE_PROBABILITY = 0.5
MAX_ALIGNMENT_ERROR = 15.0  # pixels of the 112x112 crop
NOT_ALIGNED = "not an aligned face?"
COLUMNS = ("face_probability", "alignment_error")


def is_flagged(probability: float, error: float) -> bool:
    """Whether a crop with these readings is flagged `not an aligned face?` (NaN readings, check not run: no)."""
    return bool(probability < MIN_FACE_PROBABILITY or error > MAX_ALIGNMENT_ERROR)


def onet_weights_file():
    """facenet-pytorch's onet.pt, found without importing it; InputError with the pip command if it is missing."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("facenet_pytorch")
    folder = Path(spec.submodule_search_locations[0]) / "data" if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / "onet.pt").is_file():
        raise InputError(f"the MTCNN O-Net weights are missing: {INSTALL_HINT}")
    return folder / "onet.pt"


class FaceCheck(nn.Module):
    """uint8 crops [B, 3, 112, 112] (BGR as decoded, or RGB with `rgb_input`) -> (face_probability [B],
    alignment_error [B]) as float32 CPU tensors. O-Net runs on the device the module is on."""

    def __init__(self, onet: ONet, rgb_input: bool = False):
        super().__init__()
        self.onet = onet.eval()
        self.rgb_input = rgb_input

    @classmethod
    def pretrained(cls, rgb_input: bool = False) -> "FaceCheck":
        from grafiqs.io.reading import open_regular

        onet = ONet()
        with open_regular(onet_weights_file(), "MTCNN O-Net weights file") as file:
            onet.load_state_dict(torch.load(file, weights_only=True, map_location="cpu"))
        return cls(onet, rgb_input)

    def windows(self, images: torch.Tensor) -> np.ndarray:
        """The three O-Net inputs of every crop, RGB uint8 [B, 3 windows, 48, 48, 3] (cv2 INTER_AREA, as MTCNN)."""
        crops = images.detach().cpu().permute(0, 2, 3, 1).numpy()
        if crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
            raise InputError(f"the face check reads 3x{CROP_SIZE}x{CROP_SIZE} crops, got {tuple(images.shape[1:])}")
        if not self.rgb_input:
            crops = crops[..., ::-1]
        out = np.empty((len(crops), len(FACE_WINDOWS), ONET_SIZE, ONET_SIZE, 3), np.uint8)
        for i, crop in enumerate(crops):
            for j, (x0, y0, x1, y1) in enumerate(FACE_WINDOWS):
                out[i, j] = cv2.resize(np.ascontiguousarray(crop[y0:y1, x0:x1]), (ONET_SIZE, ONET_SIZE),
                                       interpolation=cv2.INTER_AREA)
        return out

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if next(self.onet.parameters()).device.type != "cpu":
            return self._readings(images)
        # O-Net's small convolutions run 5-10x slower on two OpenMP threads than on one when other work shares the
        # cores (benchmarks/RESULTS.md): one thread for the check, the scorer's own count restored after it
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._readings(images)
        finally:
            torch.set_num_threads(threads)

    @torch.no_grad()
    def _readings(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(images) == 0:
            return torch.empty(0), torch.empty(0)
        windows = torch.from_numpy(self.windows(images)).to(next(self.onet.parameters()).device)
        batch = (windows.flatten(0, 1).permute(0, 3, 1, 2).float() - 127.5) * 0.0078125  # MTCNN's scaling
        _, points, probability = self.onet(batch)
        count = len(FACE_WINDOWS)
        logits = torch.logit(probability.double(), eps=1e-12).view(-1, count)
        face_probability = torch.sigmoid(logits.mean(1))
        box = torch.tensor(FACE_WINDOWS, dtype=torch.float64, device=points.device)  # [windows, 4]
        size, corner = (box[:, 2:] - box[:, :2])[None, :, None], box[:, :2][None, :, None]
        landmarks = torch.stack([points[:, :5], points[:, 5:]], dim=2).double().view(-1, count, 5, 2) * size + corner
        template = torch.as_tensor(ARCFACE_TEMPLATE, dtype=torch.float64, device=points.device)
        error = (landmarks.mean(1) - template).norm(dim=2).mean(1)
        return face_probability.float().cpu(), error.float().cpu()


def make_face_check(enabled: bool, rgb_input: bool) -> tuple[FaceCheck | None, str | None]:
    """(the check, None), or (None, why it is skipped): disabled, or facenet-pytorch's weights not installed."""
    if not enabled:
        return None, "face check off (--no-face-check): face_probability and alignment_error are NaN"
    try:
        return FaceCheck.pretrained(rgb_input), None
    except InputError as error:
        return None, f"face check skipped: {error}; face_probability and alignment_error are NaN"
