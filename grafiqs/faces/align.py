"""Five-point face alignment to the ArcFace 112x112 crop, from given landmarks or MTCNN detection.

The alignment is insightface's `norm_crop`: the least-squares similarity transform
(Umeyama 1991, with the reflection fix) from the five landmarks to the ArcFace template,
applied by `cv2.warpAffine` with bilinear interpolation and black borders. GraFIQs and
the face recognition models it reads were trained on such crops.

Landmarks come from a file (`read_landmarks_file`: IJB-C's `ijbc_name_5pts_score.txt`
layout, or a CSV) or from the MTCNN detector (`detect_faces`, grafiqs/faces/detect.py).
Images are uint8 HxWx3 BGR arrays, as `grafiqs.data.decode.read_image` returns them.
Points are (x, y) in pixels, in the order left eye, right eye, nose tip, left mouth
corner, right mouth corner, "left" meaning smaller x in the image.
"""
from __future__ import annotations

import csv
import functools
import io
from pathlib import Path, PurePath

import cv2
import numpy as np

from grafiqs.errors import ImageError, InputError
from grafiqs.io.reading import read_text

ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
SELECTIONS = ("largest", "center")
CSV_HEADER = ["path"] + [f"{axis}{i}" for i in range(1, 6) for axis in "xy"]


def similarity_transform(src, dst) -> np.ndarray:
    """The 2x3 matrix of the rotation, uniform scale and translation mapping points `src` [N, 2]
    closest to `dst` [N, 2] in least squares (Umeyama), never a reflection."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or not np.isfinite(src).all():
        raise InputError(f"similarity_transform needs two equal [N, 2] arrays of finite points, got {src.shape}, {dst.shape}")
    src_centred, dst_centred = src - src.mean(0), dst - dst.mean(0)
    variance = (src_centred**2).sum() / len(src)
    if variance == 0:
        raise InputError("the landmarks coincide: no transform can be estimated from them")
    u, singular, vt = np.linalg.svd(dst_centred.T @ src_centred / len(src))
    # The best orthogonal matrix may be a reflection; flipping the weakest axis gives the best rotation.
    signs = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) > 0 else -1.0])
    rotation = u @ np.diag(signs) @ vt
    scale = (singular * signs).sum() / variance
    translation = dst.mean(0) - scale * rotation @ src.mean(0)
    return np.hstack([scale * rotation, translation[:, None]])


def arcface_transform(landmarks, size: int = 112) -> np.ndarray:
    """The 2x3 matrix taking five landmarks to the ArcFace template of a size x size crop
    (insightface `estimate_norm`: sizes that are multiples of 112, or of 128 with the template shifted 8/128 right)."""
    if size % 112 == 0:
        template = ARCFACE_TEMPLATE * (size / 112)
    elif size % 128 == 0:
        template = ARCFACE_TEMPLATE * (size / 128) + [8.0 * size / 128, 0.0]
    else:
        raise InputError(f"aligned crop size {size} is not a multiple of 112 or 128")
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape != (5, 2):
        raise InputError(f"five (x, y) landmarks are needed, got an array of shape {landmarks.shape}")
    return similarity_transform(landmarks, template)


def align_face(image: np.ndarray, landmarks, size: int = 112) -> np.ndarray:
    """The size x size ArcFace crop of `image` for five landmarks, exactly as insightface's `norm_crop`."""
    return cv2.warpAffine(image, arcface_transform(landmarks, size), (size, size), borderValue=0.0)


MAX_OUTSIDE_FRACTION = 0.5  # a crop more than half outside the photo: the landmarks belong to another image


def outside_fraction(image_shape, landmarks, size: int = 112) -> float:
    """The share of the aligned crop's pixels that fall outside the photo (filled black by the warp)."""
    inside = np.ones(image_shape[:2], np.uint8)
    warped = cv2.warpAffine(inside, arcface_transform(landmarks, size), (size, size), flags=cv2.INTER_NEAREST,
                            borderValue=0)
    return 1.0 - float(warped.mean())


def read_landmarks_file(path: str | Path) -> dict[str, np.ndarray]:
    """Five landmarks per image from a text file: name -> float64 [5, 2] array of (x, y).

    Two layouts, told apart by the first line:
    - IJB-C's `ijbc_name_5pts_score.txt`: `<name> x1 y1 x2 y2 ... x5 y5 [score]` per line,
      separated by white space (the score, if there, is ignored);
    - a CSV file with the header `path,x1,y1,...,x5,y5`.
    Blank lines are skipped. A malformed line, a repeated name or a non-finite coordinate
    raises InputError naming the file and line.
    """
    text = read_text(path, "landmarks file", encoding="utf-8-sig")
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first_line:
        raise InputError(f"landmarks file {path} is empty")
    names, numbers, line_numbers = (_read_csv if first_line.startswith("path,") else _read_name_points)(path, text)
    bad = np.flatnonzero(~np.isfinite(numbers).all(axis=1))
    if bad.size:
        raise InputError(f"{path}, line {line_numbers[bad[0]]}: a coordinate is not a finite number")
    landmarks = dict(zip(names, numbers.reshape(-1, 5, 2)))
    if len(landmarks) != len(names):
        first_seen = {}
        for line, name in zip(line_numbers, names):
            if name in first_seen:
                raise InputError(f"{path}, line {line}: {name} already has landmarks on line {first_seen[name]}")
            first_seen[name] = line
    return landmarks


def _read_name_points(path, text: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The IJB-C layout, parsed in bulk (the real file has ~470k lines): one split of the whole text
    and one conversion of the coordinates; rows are looked at one by one only to name a bad number."""
    lines = text.splitlines()
    counts = np.fromiter(map(len, map(str.split, lines)), np.int64, len(lines))
    line_numbers = np.flatnonzero(counts) + 1
    expected = counts[line_numbers[0] - 1]
    bad = np.flatnonzero((counts != 0) & ((counts != expected) | ((counts != 11) & (counts != 12))))
    if bad.size:
        raise InputError(f"{path}, line {bad[0] + 1}: expected `<name> x1 y1 ... x5 y5 [score]` like line "
                         f"{line_numbers[0]}, got {counts[bad[0]]} fields")
    table = np.array(text.split(), dtype=object).reshape(-1, expected)
    try:
        numbers = table[:, 1:11].astype(np.float64)
    except ValueError:
        row = next(i for i, fields in enumerate(table[:, 1:11]) if not all(map(_is_number, fields)))
        raise InputError(f"{path}, line {line_numbers[row]}: the ten coordinates are not all numbers") from None
    return table[:, 0].tolist(), numbers, line_numbers


def _read_csv(path, text: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    reader = csv.reader(io.StringIO(text))
    header = next([field.strip() for field in row] for row in reader if any(field.strip() for field in row))
    if header != CSV_HEADER:
        raise InputError(f"{path}, line {reader.line_num}: the CSV header must be {','.join(CSV_HEADER)}, "
                         f"got {','.join(header)}")
    names, numbers, line_numbers = [], [], []
    for row in reader:
        if not any(field.strip() for field in row):
            continue
        if len(row) != 11 or not all(map(_is_number, row[1:])):
            raise InputError(f"{path}, line {reader.line_num}: expected a path and ten numbers, got {','.join(row)}")
        names.append(row[0])
        numbers.append([float(field) for field in row[1:]])
        line_numbers.append(reader.line_num)
    if not names:
        raise InputError(f"{path} has no landmarks after its header")
    return names, np.array(numbers, np.float64).reshape(-1, 10), np.array(line_numbers)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _detector(device: str):
    from grafiqs.faces.detect import MTCNN  # torch is imported only when a face has to be detected

    return MTCNN.pretrained(device)


def detect_faces(image_bgr: np.ndarray, device: str = "cpu") -> list[tuple[np.ndarray, float, np.ndarray]]:
    """Every face MTCNN finds (20 px and up): (box [x1, y1, x2, y2], confidence in [0, 1],
    landmarks [5, 2]), most confident first; an empty list when there is none.

    Needs the facenet-pytorch weights (InputError with the pip command if missing); the
    networks load once per device."""
    if not (isinstance(image_bgr, np.ndarray) and image_bgr.dtype == np.uint8 and image_bgr.ndim == 3
            and image_bgr.shape[2] == 3):
        raise InputError("detect_faces needs a uint8 HxWx3 BGR image")
    boxes, scores, landmarks = _detector(str(device)).detect(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    return [(b.astype(np.float64), float(s), p.astype(np.float64)) for b, s, p in zip(boxes, scores, landmarks)]


def choose_face(boxes, image_shape, select: str = "largest") -> int:
    """Index of the face to align among `boxes` [N, 4]: the largest box ("largest"), or the
    one whose centre is nearest the image centre ("center", as CR-FIQA's Adience script)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if select == "largest":
        return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    if select == "center":
        centre = np.array([image_shape[1], image_shape[0]]) / 2
        return int(np.argmin(np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - centre, axis=1)))
    raise InputError(f"face selection must be one of {', '.join(SELECTIONS)}, got {select!r}")


class FaceAligner:
    """Image -> ArcFace 112x112 crop, from the image's landmarks in `landmarks` or else by detection.

    `landmarks` maps names to [5, 2] points (as `read_landmarks_file` returns). A source path
    takes the entry of the longest trailing part of it that is a key ("a/b/c.jpg", then
    "b/c.jpg", then "c.jpg"), so both IJB-C's bare names and a CSV's relative paths match;
    a source without an entry is detected. Among several detected faces, `select` picks
    the largest box ("largest", the default) or the box centre nearest the image centre
    ("center"). A detected face's confidence is MTCNN's O-Net probability; given
    landmarks have confidence NaN.
    """

    def __init__(self, landmarks: dict[str, np.ndarray] | None = None, select: str = "largest", device: str = "cpu",
                 detect: bool = True):
        if select not in SELECTIONS:
            raise InputError(f"face selection must be one of {', '.join(SELECTIONS)}, got {select!r}")
        self.landmarks = landmarks or {}
        self.select = select
        self.device = device
        self.detect = detect  # False: an image without an entry in `landmarks` is an ImageError

    def landmarks_for(self, source: str) -> np.ndarray | None:
        parts = PurePath(source).parts
        key = next((key for key in (source, *("/".join(parts[i:]) for i in range(len(parts)))) if key in self.landmarks), None)
        return None if key is None else np.asarray(self.landmarks[key], np.float64)

    def __call__(self, image_bgr: np.ndarray, source: str = "image") -> tuple[np.ndarray, np.ndarray, float]:
        """(aligned uint8 112x112x3 BGR crop, the [5, 2] landmarks used, confidence); ImageError
        naming `source` when no face is found."""
        landmarks = self.landmarks_for(source)
        if landmarks is not None:
            outside = outside_fraction(image_bgr.shape, landmarks)
            if outside > MAX_OUTSIDE_FRACTION:
                raise ImageError(f"{source}: not scored: {outside:.0%} of the aligned crop lies outside the photo "
                                 f"({image_bgr.shape[1]}x{image_bgr.shape[0]}); are the landmarks for another image size?")
            return align_face(image_bgr, landmarks), landmarks, float("nan")
        if not self.detect:
            raise ImageError(f"{source}: no landmarks for it in the landmark file (add --align to detect them)")
        faces = detect_faces(image_bgr, self.device)
        if not faces:
            raise ImageError(f"{source}: no face found (MTCNN, faces of 20 pixels and larger)")
        _, confidence, landmarks = faces[choose_face([box for box, _, _ in faces], image_bgr.shape, self.select)]
        return align_face(image_bgr, landmarks), landmarks, confidence
