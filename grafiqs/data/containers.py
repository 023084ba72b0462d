"""Images scored where they lie: insightface RecordIO sets and `.bin` verification sets, never unpacked.

`score.py --image-path` takes, besides a folder of crops or one image file,

- a RecordIO set: the folder holding `train.rec` + `train.idx`, or the `.rec` file itself (its index is the `.idx`
  of the same stem beside it);
- a folder of RecordIO shards: every `*.rec` in it (e.g. `train_0.rec` + `train_0.idx`, `train_1.rec` ...), each
  with its own index; used when the folder holds no `train.rec`;
- an insightface `.bin` verification set (`lfw.bin`, `cfp_fp.bin`, ...), read by the restricted unpickler.

**Names.** A scored image is named `<container>#<number>`: the container spelled as the other paths are
(pathlib-normalised, `--image-path` joined with the file name) and, for RecordIO, the record's key in the index
(insightface's images are keys 1..N, key 0 being the header), for `.bin` the image's position (pair i is images
2i and 2i+1), zero-padded to six digits or to the width of the largest number of that container, so names sort
in record order: `faces_emore/train.rec#000123`, `lfw.bin#000042`. The name reads back (`parse_name`: the
container path and the number, `RecordIOReader.read(key)`), and `scores.csv` gains a `label` column with the
record's identity label (the first label of its IRHeader, as insightface reads it) for RecordIO inputs.

**Identity.** What a resumed run compares, per image, as it compares an image file's size, mtime and ctime:
the record's offset and length in the `.rec` (its span to the next record of the index) plus the container's
stamp, the SHA-256 of its `.idx` (first 60 bits) and the `.rec`'s size and mtime (for `.bin`: the image's
position and length and the file's SHA-256). A changed container is scored again, never mixed with old results;
a copy must keep the mtime (`rsync -a`, `cp -p`) to be resumed.

Records are read and decoded in the DataLoader workers (each worker opens its own handle); a record that cannot
be read (bad magic, cut short, a corrupt IRHeader, an image that does not decode) is skipped with the reason in
errors.csv, as a bad image file is.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from grafiqs.data.folders import ImageFileDataset
from grafiqs.data.recordio import RecordIOError, RecordIOReader, image_keys_of, unpack_record
from grafiqs.errors import ImageError, InputError
from grafiqs.io.reading import file_digest, open_regular
from grafiqs.io.score_files import name_problem, printable_path

SEPARATOR = "#"
REC_SUFFIX, IDX_SUFFIX, BIN_SUFFIX = ".rec", ".idx", ".bin"
SINGLE_SET = "train.rec"
MIN_WIDTH = 6


def record_name(container: str, number: int, width: int = MIN_WIDTH) -> str:
    """`<container>#<number>`, the number zero-padded to `width` digits."""
    return f"{container}{SEPARATOR}{number:0{width}d}"


def parse_name(name: str) -> tuple[str, int]:
    """(container path, record key or image position) of a name `record_name` made; ValueError otherwise."""
    container, separator, digits = name.rpartition(SEPARATOR)
    if not separator or not container or not digits.isdigit() or not digits.isascii():
        raise ValueError(f"{name!r} is not a container image name (<container>{SEPARATOR}<number>)")
    return container, int(digits)


def _width(largest: int) -> int:
    return max(MIN_WIDTH, len(str(largest)))


def _stamp_of(digest: str) -> int:
    """The first 60 bits of a SHA-256 as an integer (a file identity holds integers only)."""
    return int(digest[:15], 16)


def _check_spelling(spelled: str) -> None:
    problem = name_problem(spelled)
    if problem:
        raise InputError(f"{printable_path(spelled)}: {problem}; the score files name every image after its container "
                         "(one path per line): rename it")


class RecordIOShard:
    """One `.rec` with its `.idx`: the image keys, each record's offset and span, and the container's stamp."""

    def __init__(self, rec_path: Path, spelled: str):
        _check_spelling(spelled)
        idx_path = rec_path.with_suffix(IDX_SUFFIX)
        if not os.path.lexists(idx_path):
            raise InputError(f"{rec_path}: no index {idx_path.name} beside it; score.py reads records through the "
                             "index (rebuild it with mxnet's im2rec or write the set with write_recordio)")
        for path, what in ((rec_path, "RecordIO file"), (idx_path, "RecordIO index")):
            open_regular(path, what, limit=None).close()  # a FIFO or device is refused at once
        self.spelled = spelled
        self.reader = RecordIOReader(rec_path, idx_path)
        self.keys, self.header = image_keys_of(self.reader)
        offsets = self.reader.sorted_offsets()
        order = np.argsort(offsets, kind="stable")
        following = np.append(offsets[order][1:], self.reader.size)
        self.spans = np.empty_like(offsets)
        self.spans[order] = following - offsets[order]  # bytes from a record to the next one of the index
        info = os.stat(rec_path)
        self.stamp = [_stamp_of(file_digest(idx_path, "RecordIO index")), info.st_size, info.st_mtime_ns]
        self.width = _width(int(self.keys[-1]) if len(self.keys) else 0)

    def names(self) -> list[str]:
        return [record_name(self.spelled, key, self.width) for key in self.keys.tolist()]

    def identity(self, key: int) -> list[int]:
        position = int(np.searchsorted(self.reader.sorted_keys(), key))
        return [int(self.reader.sorted_offsets()[position]), int(self.spans[position]), *self.stamp]

    def identities(self) -> list[list[int]]:
        positions = np.searchsorted(self.reader.sorted_keys(), self.keys)
        pairs = zip(self.reader.sorted_offsets()[positions].tolist(), self.spans[positions].tolist())
        return [[offset, span, *self.stamp] for offset, span in pairs]

    def has_image(self, key: int) -> bool:
        position = int(np.searchsorted(self.keys, key))
        return position < len(self.keys) and int(self.keys[position]) == key


class RecordIOContainer:
    """RecordIO shards scored in place; `names()` are the images' names in order, `read(name)` one record."""

    kind = "RecordIO"
    has_labels = True

    def __init__(self, rec_paths: Sequence[Path], spelled: Sequence[str]):
        shards = sorted((RecordIOShard(Path(p), s) for p, s in zip(rec_paths, spelled)), key=lambda s: s.spelled + SEPARATOR)
        self.shards = {shard.spelled: shard for shard in shards}
        if not any(len(shard.keys) for shard in shards):
            raise InputError(f"{', '.join(self.shards)}: the index lists no image records")

    def describe(self) -> str:
        count = sum(len(s.keys) for s in self.shards.values())
        return f"{count} records in {len(self.shards)} RecordIO file{'s' if len(self.shards) > 1 else ''}"

    def names(self) -> list[str]:
        return [name for shard in self.shards.values() for name in shard.names()]

    def identities(self) -> dict[str, list[int]]:
        return {name: identity for shard in self.shards.values()
                for name, identity in zip(shard.names(), shard.identities())}

    def locate(self, name: str) -> tuple[RecordIOShard, int]:
        """(the shard, the record key) of an image name; InputError if the name is not one of this container's."""
        try:
            spelled, key = parse_name(name)
        except ValueError as error:
            raise InputError(str(error)) from None
        shard = self.shards.get(spelled)
        if shard is None or not shard.has_image(key):
            raise InputError(f"{printable_path(name)} names no image record of {', '.join(self.shards)}")
        return shard, key

    def read(self, name: str) -> tuple[bytes, list[int], str, dict]:
        """(encoded image, identity, name, {"label": identity label}) of one record; ImageError if it is unusable."""
        shard, key = self.locate(name)
        try:
            _, label, image = unpack_record(shard.reader.read(key), f"{shard.spelled} key {key}")
        except RecordIOError as error:
            raise ImageError(f"{name}: {error}") from None
        except OSError as error:  # an I/O error of the storage: this record is skipped, the run goes on
            raise ImageError(f"{name}: cannot be read ({error.strerror or error})") from None
        return image, shard.identity(key), name, {"label": label}

    def dataset(self, names: Sequence[str], **options) -> "ContainerImages":
        return ContainerImages(self, names, **options)


class BinContainer:
    """An insightface `.bin` verification set scored in place (its images are held in memory, as the file is)."""

    kind = ".bin"
    has_labels = False

    def __init__(self, path: Path, spelled: str):
        from grafiqs.data.verification import load_bin_pairs

        _check_spelling(spelled)
        self.spelled = spelled
        self.images = load_bin_pairs(path).images
        self.stamp = _stamp_of(file_digest(path, ".bin pair file"))
        self.width = _width(len(self.images) - 1)

    def describe(self) -> str:
        return f"{len(self.images)} images of a .bin verification set"

    def names(self) -> list[str]:
        return [record_name(self.spelled, i, self.width) for i in range(len(self.images))]

    def identities(self) -> dict[str, list[int]]:
        return {name: [i, len(self.images[i]), self.stamp] for i, name in enumerate(self.names())}

    def read(self, name: str) -> tuple[bytes, list[int], str]:
        spelled, index = parse_name(name)
        if spelled != self.spelled or not 0 <= index < len(self.images):
            raise InputError(f"{printable_path(name)} names no image of {self.spelled}")
        return bytes(self.images[index]), [index, len(self.images[index]), self.stamp], name

    def dataset(self, names: Sequence[str], **options) -> "ContainerImages":
        return ContainerImages(self, names, **options)


class ContainerImages(ImageFileDataset):
    """Item i: image `names[i]` of a container, decoded in the DataLoader worker as ImageFileDataset serves files."""

    def __init__(self, container, names: Sequence[str], **options):
        super().__init__(names, **options)
        self.container = container

    def read(self, index: int):
        return self.container.read(self.paths[index])


def open_container(path: str | os.PathLike | None):
    """The container `path` names (see the module's docstring), or None for a folder of images or an image file."""
    if path is None or str(path) == "":
        return None
    root = Path(path)
    spelled = str(root)
    if root.is_dir():
        if os.path.lexists(root / SINGLE_SET):
            return RecordIOContainer([root / SINGLE_SET], [str(root / SINGLE_SET)])
        try:
            shards = sorted(n for n in os.listdir(root) if n.lower().endswith(REC_SUFFIX) and not n.startswith("."))
        except OSError:
            return None  # list_images names the folder that cannot be listed
        return RecordIOContainer([root / n for n in shards], [str(root / n) for n in shards]) if shards else None
    suffix = root.suffix.lower()
    if suffix == REC_SUFFIX:
        if not os.path.lexists(root):
            raise InputError(f"image path not found: {path} (a RecordIO .rec file, with its .idx beside it)")
        return RecordIOContainer([root], [spelled])
    if suffix == IDX_SUFFIX:
        raise InputError(f"{path} is a RecordIO index: give the .rec file (or the folder holding train.rec)")
    if suffix == BIN_SUFFIX:
        if not os.path.lexists(root):
            raise InputError(f"image path not found: {path} (an insightface .bin verification set)")
        return BinContainer(root, spelled)
    return None
