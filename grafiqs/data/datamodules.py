"""LightningDataModules for face-recognition training: synthetic faces, image folders, insightface RecordIO.

Every dataset here yields **uint8** 3x112x112 tensors (made by `to_model_tensor`, the same
resize the scorer uses) and the LightningModule normalises on the device with
`grafiqs.data.decode.normalize`: one preprocessing for training, validation and GraFIQs
scoring, and four times less data through the DataLoader than float32.

Each module knows the channel order it feeds (`colour_order`: "bgr" for cv2-read and
synthetic images, "rgb" for insightface RecordIO sets) so the training CLI can record it in
the model's hyper-parameters; a model is only meaningful with the order it was trained on.

Augmentations are a YAML-friendly list such as
`[{"HorizontalFlip": {"p": 0.5}}, {"RandomBrightnessContrast": {"p": 0.3}}]` (nested
`{"OneOf": {"transforms": [...], "p": 0.5}}` works too), built into
`albumentations.Compose(..., seed=augmentation_seed, strict=True)`. In DataLoader workers
the Compose is re-seeded from the worker's torch seed (see `seed_worker`): otherwise every
worker would replay the same augmentation stream.

`calibration_dataloader()` serves the training images *without* augmentation, in a fixed
shuffled order, for the exact BatchNorm re-estimation that GraFIQs depends on
(`grafiqs.lit.callbacks.BNRecalibration`).
"""
from __future__ import annotations

import os
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from grafiqs.data.decode import read_image, to_model_tensor
from grafiqs.data.folders import parse_extensions
from grafiqs.data.recordio import RecordIODataset
from grafiqs.data.synthetic import DEGRADATIONS, SyntheticFaces, make_verification_probes, verification_pairs
from grafiqs.data.verification import (
    VerificationImages,
    VerificationSet,
    load_bin_pairs,
    load_lfw_pairs,
    load_pair_list,
)
from grafiqs.errors import InputError

COLOUR_ORDERS = ("bgr", "rgb")


# --------------------------------------------------------------------------- augmentations


def build_augmentations(spec: Sequence[dict] | None, seed: int | None = 0):
    """YAML list of `{TransformName: {kwargs}}` -> `albumentations.Compose`, or None for no augmentation.

    Names are albumentations classes (`HorizontalFlip`, `RandomBrightnessContrast`, `OneOf`, ...);
    a `transforms` kwarg is itself such a list. `strict=True` makes a misspelled argument an error
    instead of a silently ignored one.
    """
    if not spec:
        return None
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    def build(items: Sequence[dict], where: str) -> list:
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise InputError(f"{where}: expected a list of {{TransformName: {{arguments}}}}, got {items!r:.80}")
        built = []
        for position, item in enumerate(items):
            if not isinstance(item, dict) or len(item) != 1:
                raise InputError(f"{where}[{position}]: expected one {{TransformName: {{arguments}}}} mapping, got {item!r:.80}")
            (name, kwargs), = item.items()
            kwargs = dict(kwargs or {})
            cls = getattr(A, str(name), None)
            if not isinstance(cls, type):
                raise InputError(f"{where}[{position}]: albumentations has no transform named {name!r}")
            if "transforms" in kwargs:
                kwargs["transforms"] = build(kwargs["transforms"], f"{where}[{position}].{name}.transforms")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # unknown arguments: strict Compose below refuses them
                    transform = cls(**kwargs)
                A.Compose([transform], strict=True)  # strict argument check, naming this very entry
            except Exception as error:  # albumentations validates arguments with pydantic
                raise InputError(f"{where}[{position}]: {name}({kwargs}) is invalid: {error}") from None
            built.append(transform)
        return built

    return A.Compose(build(spec, "augmentations"), seed=seed, strict=True)


class FaceTransform:
    """HxWx3 uint8 image (in the module's colour order) -> augmented uint8 3x112x112 tensor."""

    def __init__(self, augment: Callable | None = None):
        self.augment = augment

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if self.augment is not None:
            image = self.augment(image=image)["image"]
        return to_model_tensor(image)

    def reseed(self, seed: int) -> None:
        if self.augment is not None and hasattr(self.augment, "set_random_seed"):
            self.augment.set_random_seed(int(seed) % 2**32)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: Lightning's per-worker seeding plus a distinct augmentation stream.

    The worker's torch seed differs per worker, per rank and per epoch (and is reproducible
    under `seed_everything`), so it is what the albumentations Compose is re-seeded with.
    """
    from lightning.fabric.utilities.seed import pl_worker_init_function

    pl_worker_init_function(worker_id)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if isinstance(transform, FaceTransform):
        transform.reseed(info.seed)


class TransformedDataset(Dataset):
    """(image, label) items of `base` with `transform` applied to the image; shares `base` between views."""

    def __init__(self, base: Dataset, transform: Callable):
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        return self.transform(image), label


# --------------------------------------------------------------------------- verification sets


class PairImages(Dataset):
    """The unique images of one verification set as (index, uint8 3x112x112 tensor), with its pairs.

    `pairs` [N, 2] indexes these images and `issame` [N] marks genuine pairs; the module
    embeds every image once and scores the pairs at the end of validation.
    """

    def __init__(self, name: str, pairs: np.ndarray, issame: np.ndarray, images: Dataset | Sequence[np.ndarray]):
        self.name = name
        self.pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        self.issame = np.asarray(issame, dtype=bool).reshape(-1)
        self.images = images
        if len(self.pairs) != len(self.issame) or len(self.pairs) == 0:
            raise InputError(f"verification set {name}: {len(self.pairs)} pairs and {len(self.issame)} genuine flags")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        item = self.images[index]
        if isinstance(self.images, VerificationImages):
            return item
        return index, to_model_tensor(item)

    @classmethod
    def from_verification_set(cls, name: str, vset: VerificationSet, colour_order: str) -> "PairImages":
        return cls(name, vset.pairs, vset.issame, VerificationImages(vset, bgr2rgb=colour_order == "rgb"))


def load_val_set(spec: str) -> tuple[str, VerificationSet]:
    """A verification set from a path: `x.bin` (insightface), a folder with `pair_list.txt` (CR-FIQA),
    or an LFW `pairs.txt`, optionally `pairs.txt::images_root` (default root: the folder of
    pairs.txt, or its `lfw/` sub-folder when that exists). The name is the file stem / folder name."""
    text, _, root = str(spec).partition("::")
    path = Path(text)
    if path.suffix == ".bin":
        return path.stem, load_bin_pairs(path)
    if path.is_dir():
        return path.name, load_pair_list(path)
    if path.suffix == ".txt":
        images_root = Path(root) if root else (path.parent / "lfw" if (path.parent / "lfw").is_dir() else path.parent)
        name = path.parent.name or "lfw"
        return name, load_lfw_pairs(path, images_root)
    raise InputError(
        f"validation set {spec!r}: expected an insightface .bin file, a CR-FIQA folder with pair_list.txt, "
        "or an LFW pairs.txt (optionally pairs.txt::images_root)"
    )


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


# --------------------------------------------------------------------------- base module


class FaceDataModule(L.LightningDataModule):
    """Base of the training data modules: loaders, augmentation and calibration data.

    Subclasses provide `colour_order`, `num_classes`, `_raw_train_dataset()` (a dataset of
    (HxWx3 uint8 image in `colour_order`, label)) and `_make_val_sets()`.
    """

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 4,
        augmentations: list[dict] | None = None,
        augmentation_seed: int = 0,
        val_batch_size: int | None = None,
        calibration_batch_size: int | None = None,
        pin_memory: bool | None = None,
    ):
        super().__init__()
        if batch_size < 2:
            raise InputError(f"batch_size must be >= 2 (BatchNorm needs more than one sample), got {batch_size}")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.augmentations = list(augmentations or [])
        self.augmentation_seed = int(augmentation_seed)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.calibration_batch_size = int(calibration_batch_size or batch_size)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.augment = build_augmentations(self.augmentations, self.augmentation_seed)  # a bad spec fails here
        self._val_sets: list[PairImages] | None = None

    # -- to implement
    @property
    def colour_order(self) -> str:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def _raw_train_dataset(self) -> Dataset:
        raise NotImplementedError

    def _make_val_sets(self) -> list[PairImages]:
        return []

    # -- shared
    @cached_property
    def raw_train_dataset(self) -> Dataset:
        return self._raw_train_dataset()

    @cached_property
    def train_dataset(self) -> Dataset:
        return TransformedDataset(self.raw_train_dataset, FaceTransform(self.augment))

    @cached_property
    def calibration_dataset(self) -> Dataset:
        """Training images without augmentation (for BatchNorm re-estimation)."""
        return TransformedDataset(self.raw_train_dataset, FaceTransform(None))

    @property
    def val_sets(self) -> list[PairImages]:
        if self._val_sets is None:
            self._val_sets = self._make_val_sets()
        return self._val_sets

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate"):
            _ = self.val_sets  # build (and validate) the pair sets once, before the loops start

    def _loader(self, dataset: Dataset, batch_size: int, **kwargs: Any) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=seed_worker if self.num_workers > 0 else None,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        if len(self.train_dataset) < self.batch_size:
            raise InputError(f"{len(self.train_dataset)} training images, fewer than one batch of {self.batch_size}")
        # drop_last: a last batch of one image breaks BatchNorm1d and skews the BN statistics.
        return self._loader(self.train_dataset, self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(s, self.val_batch_size, shuffle=False) for s in self.val_sets]

    def calibration_dataloader(self, rank: int = 0, world_size: int = 1, batch_size: int | None = None) -> DataLoader:
        """Non-augmented training batches in a fixed shuffled order (the same on every call).

        With `world_size > 1` each rank gets its shard (equal batch counts on every rank, which
        SyncBatchNorm needs). Full batches only, so every batch weighs the same in the average.
        """
        dataset = self.calibration_dataset
        if world_size > 1:
            sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=self.augmentation_seed)
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(self.augmentation_seed))
        loader = DataLoader(
            dataset,
            batch_size=int(batch_size or self.calibration_batch_size),
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )
        if len(loader) == 0:
            raise InputError(f"{len(dataset)} training images per rank: not one full calibration batch of {loader.batch_size}")
        return loader


# --------------------------------------------------------------------------- synthetic


class SyntheticFacesDataModule(FaceDataModule):
    """Procedural faces (`grafiqs.data.synthetic`), BGR like cv2; validation on held-out identities.

    Training: identities `0 .. num_identities-1`, `images_per_identity` samples each. Validation:
    `val_identities` people starting at `val_identity_offset` (never seen in training): one clean
    enrolment each and `val_probes_per_identity` probes, each clean (severity 0) and degraded by
    every kind in `val_kinds` at every severity in `val_severities`; every probe is compared
    with every enrolment (or `val_nonmated_per_probe` sampled non-mated ones).
    """

    def __init__(
        self,
        num_identities: int = 200,
        images_per_identity: int = 12,
        seed: int = 0,
        val_identities: int = 40,
        val_identity_offset: int = 1_000_000,
        val_probes_per_identity: int = 2,
        val_kinds: list[str] | None = None,
        val_severities: list[int] | None = None,
        val_nonmated_per_probe: int | None = None,
        batch_size: int = 64,
        num_workers: int = 1,
        augmentations: list[dict] | None = None,
        augmentation_seed: int = 0,
        val_batch_size: int | None = None,
        calibration_batch_size: int | None = None,
        pin_memory: bool | None = None,
    ):
        super().__init__(batch_size, num_workers, augmentations, augmentation_seed, val_batch_size, calibration_batch_size, pin_memory)
        if val_identity_offset < num_identities:
            raise InputError(
                f"val_identity_offset {val_identity_offset} overlaps the training identities 0..{num_identities - 1}; "
                "held-out validation needs an offset >= num_identities"
            )
        self.num_identities = int(num_identities)
        self.images_per_identity = int(images_per_identity)
        self.seed = int(seed)
        self.val_identities = int(val_identities)
        self.val_identity_offset = int(val_identity_offset)
        self.val_probes_per_identity = int(val_probes_per_identity)
        self.val_kinds = list(DEGRADATIONS if val_kinds is None else val_kinds)
        self.val_severities = list((0, 1) if val_severities is None else val_severities)
        self.val_nonmated_per_probe = val_nonmated_per_probe

    @property
    def colour_order(self) -> str:
        return "bgr"

    @property
    def num_classes(self) -> int:
        return self.num_identities

    def _raw_train_dataset(self) -> Dataset:
        return SyntheticFaces(self.num_identities, self.images_per_identity, seed=self.seed)

    def _make_val_sets(self) -> list[PairImages]:
        if self.val_identities < 2:
            return []
        records = make_verification_probes(
            self.val_identities,
            seed=self.seed,
            identity_offset=self.val_identity_offset,
            kinds=self.val_kinds,
            severities=self.val_severities,
            probes_per_identity=self.val_probes_per_identity,
        )
        probe, enrol, mated = verification_pairs(records, self.val_nonmated_per_probe, seed=self.seed)
        return [PairImages("synthetic", np.stack([probe, enrol], axis=1), mated, [r.image for r in records])]


# --------------------------------------------------------------------------- image folders


class ImageFolderFaces(Dataset):
    """`root/<identity>/<image>` -> (HxWx3 uint8 image, label); labels follow the sorted folder names."""

    def __init__(self, root: str | Path, extensions: Sequence[str] | str | None = None, bgr2rgb: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"training image folder not found: {root} (expected one sub-folder per identity)")
        wanted = set(parse_extensions(extensions))
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            files = sorted(p for p in (self.root / name).iterdir() if p.is_file() and p.suffix.lstrip(".").lower() in wanted)
            self.samples += [(str(p), label) for p in files]
        if not self.samples:
            raise InputError(f"{root}: no images with extension {', '.join(sorted(wanted))} in identity sub-folders")
        self.bgr2rgb = bgr2rgb

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return read_image(path, self.bgr2rgb), label


class _RealDataModule(FaceDataModule):
    """Shared by the real-data modules: `colour_order` and `val_sets` paths."""

    def __init__(self, colour_order: str, val_sets: list[str] | None, **loader_args: Any):
        super().__init__(**loader_args)
        if colour_order not in COLOUR_ORDERS:
            raise InputError(f"colour_order must be 'bgr' or 'rgb', got {colour_order!r}")
        self._colour_order = colour_order
        self.val_set_paths = [str(p) for p in (val_sets or [])]

    @property
    def colour_order(self) -> str:
        return self._colour_order

    def _make_val_sets(self) -> list[PairImages]:
        loaded = [load_val_set(spec) for spec in self.val_set_paths]
        names = _unique_names([name for name, _ in loaded])
        return [PairImages.from_verification_set(name, vset, self.colour_order) for name, (_, vset) in zip(names, loaded)]


class ImageFolderDataModule(_RealDataModule):
    """One folder per identity under `root` (e.g. an unpacked CASIA-WebFace of aligned 112x112 crops).

    Images are read with cv2 (BGR); `colour_order="rgb"` converts them. `val_sets`: paths of
    `.bin` files, CR-FIQA pair-list folders or LFW `pairs.txt[::images_root]`.
    """

    def __init__(
        self,
        root: str,
        val_sets: list[str] | None = None,
        colour_order: str = "bgr",
        extensions: list[str] | None = None,
        **loader_args: Any,
    ):
        """`loader_args`: those of FaceDataModule (batch_size, num_workers, augmentations, ...)."""
        super().__init__(colour_order, val_sets, **loader_args)
        self.root = str(root)
        self.extensions = extensions

    def _raw_train_dataset(self) -> Dataset:
        return ImageFolderFaces(self.root, self.extensions, bgr2rgb=self.colour_order == "rgb")

    @property
    def num_classes(self) -> int:
        return len(self.raw_train_dataset.classes)


class RecordIODataModule(_RealDataModule):
    """insightface RecordIO set (`root/train.rec`, `train.idx`, `property`), decoded to RGB by default
    as insightface does (`colour_order="bgr"` keeps cv2's order). `num_classes` comes from `property`."""

    def __init__(
        self,
        root: str,
        val_sets: list[str] | None = None,
        colour_order: str = "rgb",
        **loader_args: Any,
    ):
        """`loader_args`: those of FaceDataModule (batch_size, num_workers, augmentations, ...)."""
        super().__init__(colour_order, val_sets, **loader_args)
        self.root = str(root)

    def _raw_train_dataset(self) -> Dataset:
        return RecordIODataset(self.root, transform=None, bgr2rgb=self.colour_order == "rgb")

    @property
    def num_classes(self) -> int:
        return int(self.raw_train_dataset.num_classes)
