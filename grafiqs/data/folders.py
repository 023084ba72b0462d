"""Finding images on disk and serving them, decoded and resized, to a DataLoader."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import torch
from torch.utils.data import Dataset, Sampler

from grafiqs.data.decode import INPUT_SIZE, decode_image, read_file_bytes, to_model_tensor
from grafiqs.io.atomic import atomic_write_bytes
from grafiqs.io.ledger import LEDGER, LOG_FOLDER, OutputFolder
from grafiqs.io.score_files import name_problem, printable_path
from grafiqs.errors import GrafiqsError, ImageError, InputError, ReadError

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff")


def parse_extensions(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'jpg,png' or ['.jpg', 'PNG'] -> ('jpg', 'png'); None -> the common image types."""
    if text is None:
        return DEFAULT_EXTENSIONS
    items = text.split(",") if isinstance(text, str) else list(text)
    extensions = tuple(e.strip().lstrip(".").lower() for e in items if e.strip().lstrip("."))
    if not extensions:
        raise InputError(f"no usable image extension in {text!r}; give e.g. --image-extension jpg,png")
    return extensions


def list_images(path: str | Path, extensions: Sequence[str] = DEFAULT_EXTENSIONS, recursive: bool = False,
                exclude: Sequence[str | Path] = (), unlisted: list | None = None) -> list[str]:
    """Sorted image paths under `path` (a folder, or a single image file taken as it is).

    Paths are spelled as the official script's `Path(image_path).glob(...)` writes them:
    pathlib-normalised (`./crops//x.jpg` -> `crops/x.jpg`), not resolved. Extensions match
    case-insensitively. Everything with a matching name is listed, whatever its type (a folder
    named `x.png` in flat mode too): the reader refuses FIFOs, devices, folders and broken links
    with a reason, so none is silently dropped. With `recursive`, the folders in `exclude` (the
    run's own output folders) and every folder holding a grafiqs ledger are not entered: the
    program's own outputs are never inputs; sub-folders that cannot be listed are appended to
    `unlisted` as (folder, reason).
    """
    if str(path) == "":
        raise InputError("--image-path is empty; give a folder of aligned face crops or one image file")
    root = Path(path)
    if os.path.lexists(root) and not root.is_dir():
        return [str(root)]
    if not root.is_dir():
        raise InputError(f"image path not found: {path} (give a folder of aligned face crops or one image file)")
    wanted = {e.lower() for e in extensions}
    try:
        own = _own_files(root, exclude)
        names = _walk_files(root, exclude, unlisted if unlisted is not None else []) if recursive else os.listdir(root)
        found = sorted(str(root / relative) for relative in names
                       if Path(relative).suffix.lstrip(".").lower() in wanted and relative not in own)
    except OSError as error:
        raise ReadError("image folder", path, error.strerror or str(error)) from None
    if not found:
        where = "under" if recursive else "directly in"
        hint = "" if recursive else "; add --recursive to search sub-folders"
        raise InputError(f"no images with extension {', '.join(sorted(wanted))} {where} {path}{hint}")
    return found


def _own_files(root: Path, exclude: Sequence[str | Path]) -> set[str]:
    """The files of `root` that the program wrote there, when `root` is one of the run's own output folders
    (`exclude`: --output-dir, --save-aligned, ...): its ledger's names (a contact sheet, crops) are never inputs."""
    root_inode = _inode(root)
    own: set[str] = set()
    for folder in exclude:
        if os.path.isdir(folder) and _inode(folder) == root_inode:
            own |= {os.path.normpath(name) for name in OutputFolder(folder).recorded()}
    return own


def _walk_files(root: Path, exclude: Sequence[str | Path], unlisted: list):
    """Relative paths of the files under `root`, following symlinked folders but entering each real folder once
    (a symlink loop would otherwise recurse forever); not entering `exclude` nor folders the program writes into
    (`root` itself is listed even then: `_own_files` leaves out the program's own files there)."""
    visited = {_inode(p) for p in exclude if os.path.isdir(p)} - {_inode(root)}
    for folder, subfolders, files in os.walk(root, followlinks=True, onerror=lambda e: unlisted.append(
            (e.filename, f"{printable_path(e.filename)}: folder cannot be listed ({e.strerror or e}); its images are "
                         "not scored"))):
        inode = _inode(folder)
        if inode in visited or (folder != str(root) and os.path.lexists(os.path.join(folder, LOG_FOLDER, LEDGER))):
            subfolders[:] = []
            continue
        visited.add(inode)
        subfolders.sort()
        for name in files:
            yield os.path.relpath(os.path.join(folder, name), root)


def _inode(folder) -> tuple[int, int]:
    info = os.stat(folder)
    return info.st_dev, info.st_ino


class ImageFileDataset(Dataset):
    """Item i: image i as a uint8 3x112x112 tensor with its original size, or the reason it is unusable.

    A bad file never raises here: it comes back with `error` set so the run goes on
    and the writer can name it. With an `aligner` (grafiqs.faces.align.FaceAligner) the decoded
    photo is first aligned to the ArcFace 112x112 crop, and the item carries the five landmarks
    and the detection confidence; `save_aligned` maps a path to the PNG file its crop is saved to.
    """

    def __init__(self, paths: Sequence[str], bgr2rgb: bool = False, size: int = INPUT_SIZE, aligner=None,
                 save_aligned: dict[str, Path] | None = None):
        self.paths = list(paths)
        self.bgr2rgb = bgr2rgb
        self.size = size
        self.aligner = aligner
        self.save_aligned = save_aligned or {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int | None) -> dict:
        if index is None:  # ShardSampler's placeholder for a process without images
            return {"index": None, "image": None, "error": None, "shape": None, "file": None}
        try:
            data, identity, source, *extra = self.read(index)  # a container's read adds {"label": ...}
            image = decode_image(data, source=source)  # BGR, as cv2.imread
            alignment = {}
            if self.aligner is not None:
                image, landmarks, confidence = self.aligner(image, source=source)
                alignment = {"landmarks": landmarks.reshape(-1).tolist(), "confidence": confidence}
                if source in self.save_aligned:
                    save_crop(self.save_aligned[source], image)
                    alignment["crop"] = str(self.save_aligned[source])  # its name stays this image's on a resume
        except GrafiqsError as error:
            return {"index": index, "image": None, "error": str(error), "shape": None, "file": None}
        if self.bgr2rgb:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return {"index": index, "image": to_model_tensor(image, self.size), "error": "", "shape": image.shape[:2],
                "file": identity, **alignment, **(extra[0] if extra else {})}

    def read(self, index: int) -> tuple[bytes, list[int] | None, str]:
        """(encoded bytes, file identity, the path the aligner and messages know it by) of item `index`; a
        subclass may add a fourth element, a dict of values the item carries into its log record (a label)."""
        path = self.paths[index]
        problem = name_problem(path)
        if problem:
            raise ImageError(f"{printable_path(path)}: not scored: {problem} (score files hold one path per line); "
                             "rename the file")
        data, info = read_file_bytes(path)
        return data, file_identity(info), path


def save_crop(path: Path, image) -> None:
    """--save-aligned: the crop as PNG; a file that cannot be written (name too long, disk full) skips that image."""
    try:
        atomic_write_bytes(path, cv2.imencode(".png", image)[1].tobytes())
    except OSError as error:
        raise ImageError(f"{printable_path(str(path))}: the aligned crop cannot be saved ({error.strerror or error}); "
                         "the image is not scored") from None


def file_identity(info: os.stat_result) -> list[int]:
    """[size, mtime, ctime in ns] of a file: a resumed run rescores an image whose identity changed. The kernel sets
    the ctime on every write or rename, and no tool can set it back, so an image replaced under the same name,
    size and mtime is scored again."""
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def collate_images(items: list[dict]) -> dict:
    """Stack the readable images; carry the unreadable ones as (index, reason) pairs."""
    good = [item for item in items if item["image"] is not None]
    return {
        "index": torch.tensor([item["index"] for item in good], dtype=torch.long),
        "image": torch.stack([item["image"] for item in good]) if good else torch.empty(0, 3, 0, 0, dtype=torch.uint8),
        "resized": torch.tensor([tuple(item["shape"]) != tuple(item["image"].shape[1:]) for item in good], dtype=torch.bool),
        "file": [item["file"] for item in good],
        # what each image's log record carries besides its scores: the landmarks used, the crop saved, a container
        # record's label
        "alignment": [{key: item[key] for key in ("landmarks", "confidence", "crop", "label") if key in item}
                      for item in good],
        "errors": [(item["index"], item["error"]) for item in items if item["error"]],
    }


class ShardSampler(Sampler):
    """This process's share of the items, every item exactly once over all processes (rank, rank + world, ...).

    The rank is read when iterating, once DDP has started. A process with no item gets one placeholder
    (`None`, an empty batch): Lightning skips the hooks of a process without batches, and the others would
    then wait for it for ever (its own sampler refuses fewer items than processes instead).
    """

    def __init__(self, length: int):
        self.length = length

    def _share(self) -> list[int | None]:
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        return list(range(rank, self.length, world)) or [None]

    def __iter__(self):
        return iter(self._share())

    def __len__(self) -> int:
        return len(self._share())
