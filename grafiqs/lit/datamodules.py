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

The training loader is resumable (`ResumableDataLoader` over a `ResumableSampler`): each rank
draws its share of a permutation seeded with `seed_everything`'s seed + epoch, as Lightning's
own DistributedSampler does, and a checkpoint written mid-epoch records how many batches of
the epoch were served, so the resumed run continues with the next batch instead of replaying
the epoch from its start. The position travels in the datamodule's state (`state_dict` /
`load_state_dict`, restored before any loader exists): Lightning's own restore of stateful
loaders is skipped when the loader was built before the checkpoint was loaded, which is what
`estimated_stepping_batches` in `configure_optimizers` does for runs with `max_epochs`.
"""
from __future__ import annotations

import itertools
import os
import time
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from grafiqs.data.decode import read_image, to_model_tensor
from grafiqs.data.folders import parse_extensions
from grafiqs.data.recordio import RecordIODataset
from grafiqs.data.verification import (
    VerificationImages,
    VerificationSet,
    load_bin_pairs,
    load_lfw_pairs,
    load_pair_list,
)
from grafiqs.errors import InputError
from grafiqs.synthetic import (
    DEGRADATIONS,
    SyntheticFaces,
    make_verification_probes,
    verification_pairs,
)

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


# --------------------------------------------------------------------------- resumable training order


class ResumableSampler(DistributedSampler):
    """This rank's share of a per-epoch permutation (DistributedSampler), able to start part-way:
    the next pass skips its first `skip` indices, later passes are whole. `len()` stays the whole
    epoch, since Lightning counts the batches of a resumed epoch from its start."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.skip = 0

    def __iter__(self):
        skip, self.skip = self.skip, 0
        return itertools.islice(super().__iter__(), skip, None)


class ResumableDataLoader(DataLoader):
    """DataLoader with Lightning's stateful-loader interface (`state_dict` / `load_state_dict`).

    The state is the epoch and the number of its batches handed to the training loop, counted
    in the main process (not the indices the workers prefetched), which is exactly what the
    loop has consumed when Lightning writes a checkpoint. A restored loader skips those batches.
    Lightning saves the state with its fit loop and restores it when it builds the loader after
    loading the checkpoint; `FaceDataModule` also carries it, for the other case.
    """

    sampler: ResumableSampler

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError("ResumableDataLoader needs a ResumableSampler")
        self._position = (0, 0)  # (epoch, batches served in it)
        self._resume: tuple[int, int] | None = None

    def __iter__(self):
        # A generator: the body runs at the first batch, after Lightning's set_epoch for this epoch.
        epoch = self.sampler.epoch
        resume, self._resume = self._resume, None
        served = resume[1] if resume is not None and resume[0] == epoch else 0
        self.sampler.skip = served * int(self.batch_size)
        self._position = (epoch, served)
        for batch in super().__iter__():
            served += 1
            self._position = (epoch, served)
            yield batch

    def _layout(self) -> dict:
        return {"batch_size": int(self.batch_size), "num_replicas": int(self.sampler.num_replicas), "num_samples": len(self.dataset)}

    def state_dict(self) -> dict:
        epoch, served = self._position
        return {"epoch": epoch, "batches": served, **self._layout()}

    def load_state_dict(self, state: dict) -> None:
        layout = {key: state.get(key) for key in self._layout()}
        if layout != self._layout():
            rank_zero_warn(f"the checkpoint's data order was made for {layout}, this run has {self._layout()}: "
                           "the resumed epoch starts its data order from the beginning")
            return
        self._resume = (int(state["epoch"]), int(state["batches"]))


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
        self._train_loader: ResumableDataLoader | None = None
        self._train_loader_state: dict | None = None  # from a checkpoint, for the next train_dataloader()

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

    def state_dict(self) -> dict:
        """Saved in checkpoints: the training loader's position in its epoch."""
        return {} if self._train_loader is None else {"train_loader": self._train_loader.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._train_loader_state = state.get("train_loader")

    def _loader(self, dataset: Dataset, batch_size: int, loader_class: type[DataLoader] = DataLoader, **kwargs: Any) -> DataLoader:
        return loader_class(
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
        # Our own DistributedSampler subclass, so Lightning does not swap in its plain one.
        world_size, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        sampler = ResumableSampler(self.train_dataset, world_size, rank, seed=int(os.environ.get("PL_GLOBAL_SEED", 0)))
        # drop_last: a last batch of one image breaks BatchNorm1d and skews the BN statistics.
        loader = self._loader(self.train_dataset, self.batch_size, ResumableDataLoader, sampler=sampler, drop_last=True)
        if self._train_loader_state is not None:
            loader.load_state_dict(self._train_loader_state)
            self._train_loader_state = None
        self._train_loader = loader
        return loader

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
    """Procedural faces (`grafiqs.synthetic`), BGR like cv2; validation on held-out identities.

    Training: identities `0 .. num_identities-1`, `images_per_identity` samples each. Validation:
    `val_identities` people starting at `val_identity_offset` (never seen in training): one clean
    enrolment each and `val_probes_per_identity` probes, each clean (severity 0) and degraded by
    every kind in `val_kinds` at every severity in `val_severities`; every probe is compared
    with every enrolment (or `val_nonmated_per_probe` sampled non-mated ones). `world`: the
    nuisance distribution of training and validation images ("standard" or "wide": harder pose,
    expression and light, ageing, sunglasses and caps).
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
        world: Literal["standard", "wide"] = "standard",
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
        self.world = world

    @property
    def colour_order(self) -> str:
        return "bgr"

    @property
    def num_classes(self) -> int:
        return self.num_identities

    def _raw_train_dataset(self) -> Dataset:
        return SyntheticFaces(self.num_identities, self.images_per_identity, seed=self.seed, world=self.world)

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
            world=self.world,
        )
        probe, enrol, mated = verification_pairs(records, self.val_nonmated_per_probe, seed=self.seed)
        return [PairImages("synthetic", np.stack([probe, enrol], axis=1), mated, [r.image for r in records])]


# --------------------------------------------------------------------------- image folders


INDEX_WAIT_S = 3600  # how long other ranks wait for rank 0 to list a large image folder


def list_image_folder(root: Path, extensions: Sequence[str]) -> dict[str, np.ndarray]:
    """The index of `root/<identity>/<image>`: sorted class names, relative paths (UTF-8 bytes), labels."""
    wanted = set(extensions)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p.name for p in (root / name).iterdir() if p.is_file() and p.suffix.lstrip(".").lower() in wanted)
        paths += [os.fsencode(f"{name}/{file}") for file in files]  # the file system's bytes, any encoding
        labels += [label] * len(files)
    return {
        "root": np.array(str(root.resolve())),
        "extensions": np.array(sorted(wanted)),
        "classes": np.array(classes, dtype=str),
        "paths": np.array(paths, dtype=bytes),
        "labels": np.array(labels, dtype=np.int64),
    }


def load_image_folder_index(root: Path, extensions: Sequence[str], index_file: str | Path) -> dict[str, np.ndarray]:
    """The folder's index from `index_file`, written there first by global rank 0 if missing.

    Other ranks (torchrun, SLURM, Lightning's launcher) wait for the file instead of listing
    the folder themselves, so `index_file` must be on a filesystem every node sees (or be
    built beforehand). Written atomically; an index of another root or extensions is refused.
    """
    path = Path(index_file)
    if not path.exists():
        if rank_zero_only.rank == 0:
            index = list_image_folder(root, extensions)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
            with open(partial, "wb") as file:
                np.savez(file, **index)
            os.replace(partial, path)
        else:
            deadline = time.monotonic() + INDEX_WAIT_S
            while not path.exists():
                if time.monotonic() > deadline:
                    raise InputError(f"waited {INDEX_WAIT_S} s for rank 0 to write the image index {path}; "
                                     "build it beforehand or put it on a filesystem every node sees")
                time.sleep(2)
    with np.load(path, allow_pickle=False) as stored:
        index = {key: stored[key] for key in stored.files}
    built_for, wanted = (str(index["root"]), index["extensions"].tolist()), (str(root.resolve()), sorted(set(extensions)))
    if built_for != wanted:
        raise InputError(f"{path} indexes {built_for[0]} (extensions {built_for[1]}), not {wanted[0]} "
                         f"(extensions {wanted[1]}): delete it or give another index_file")
    return index


class ImageFolderFaces(Dataset):
    """`root/<identity>/<image>` -> (HxWx3 uint8 image, label); labels follow the sorted folder names.

    The file list is kept in numpy arrays (no per-file Python objects to copy into forked
    workers). With `index_file` it is read from that cached index instead of listing the
    folder in every process (`load_image_folder_index`).
    """

    def __init__(self, root: str | Path, extensions: Sequence[str] | str | None = None, bgr2rgb: bool = False,
                 index_file: str | Path | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"training image folder not found: {root} (expected one sub-folder per identity)")
        wanted = parse_extensions(extensions)
        index = list_image_folder(self.root, wanted) if index_file is None else load_image_folder_index(self.root, wanted, index_file)
        if not len(index["paths"]):
            raise InputError(f"{root}: no images with extension {', '.join(sorted(set(wanted)))} in identity sub-folders")
        self.classes = index["classes"].tolist()
        self.paths, self.labels = index["paths"], index["labels"]
        self.bgr2rgb = bgr2rgb

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.root / os.fsdecode(self.paths[index])
        return read_image(path, self.bgr2rgb), int(self.labels[index])


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
    `.bin` files, CR-FIQA pair-list folders or LFW `pairs.txt[::images_root]`. `index_file`: a
    cached file list (`.npz`), built once by rank 0 and read by every other process; without
    it every process lists the folder itself.
    """

    def __init__(
        self,
        root: str,
        val_sets: list[str] | None = None,
        colour_order: str = "bgr",
        extensions: list[str] | None = None,
        index_file: str | None = None,
        **loader_args: Any,
    ):
        """`loader_args`: those of FaceDataModule (batch_size, num_workers, augmentations, ...)."""
        super().__init__(colour_order, val_sets, **loader_args)
        self.root = str(root)
        self.extensions = extensions
        self.index_file = index_file

    def _raw_train_dataset(self) -> Dataset:
        return ImageFolderFaces(self.root, self.extensions, bgr2rgb=self.colour_order == "rgb", index_file=self.index_file)

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
