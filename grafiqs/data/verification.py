"""Face-verification pair sets: insightface `.bin` files, LFW `pairs.txt` and CR-FIQA `pair_list.txt`.

All three load into one `VerificationSet`: a list of unique images (encoded bytes for
`.bin`, file paths for the folder layouts), pairs of indices into it and a genuine flag
per pair, so evaluation code does not care where the pairs came from.

`.bin` files are pickles. Unpickling runs whatever callables the file names, so they
are read with a restricted unpickler that only knows the few numpy/bytes constructors
real files use; anything else is refused before it is called.
"""
from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from grafiqs.data.decode import INPUT_SIZE, decode_image, read_file_bytes, to_model_tensor
from grafiqs.data.folders import parse_extensions
from grafiqs.errors import InputError, ReadError
from grafiqs.io.reading import read_bytes

MAX_REPORTED_MISSING = 5


class VerificationDataError(InputError):
    """A pair-list or .bin verification file is malformed or names images that are missing."""


class UnsafePickleError(VerificationDataError):
    """A .bin file asked the unpickler for a global outside the allow-list (it could run code)."""


# --------------------------------------------------------------------------- the set


@dataclass(eq=False)
class VerificationSet:
    """Unique images, index pairs into them and a genuine flag per pair.

    `images[i]` is either encoded bytes (from a `.bin`) or a file path (folder layouts);
    `read(i)` gives the encoded bytes in both cases. `names[i]` is a stable name per
    image: the path relative to the image root, or `"{i:06d}"` for `.bin` sets.
    `folds` is the fold count the file declares (LFW `pairs.txt`), else None.
    """

    source: str
    images: list[bytes | str] = field(repr=False)
    pairs: np.ndarray = field(repr=False)
    issame: np.ndarray = field(repr=False)
    names: list[str] = field(repr=False)
    folds: int | None = None
    _kind: str = field(init=False, repr=False, default="")

    def __post_init__(self) -> None:
        self.pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        self.issame = np.asarray(self.issame, dtype=bool).reshape(-1)
        if len(self.pairs) != len(self.issame):
            raise VerificationDataError(f"{self.source}: {len(self.pairs)} pairs but {len(self.issame)} genuine flags")
        if len(self.names) != len(self.images):
            raise VerificationDataError(f"{self.source}: {len(self.images)} images but {len(self.names)} names")
        if self.pairs.size and (self.pairs.min() < 0 or self.pairs.max() >= len(self.images)):
            raise VerificationDataError(f"{self.source}: pair indices outside 0..{len(self.images) - 1}")
        kinds = {isinstance(image, str) for image in self.images}
        if len(kinds) > 1:
            raise VerificationDataError(f"{self.source}: images mix file paths and encoded bytes")
        self._kind = "path" if kinds == {True} else "bytes"

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def paths(self) -> list[str] | None:
        """Image file paths for folder-based sets; None when the images are held in memory (.bin)."""
        return list(self.images) if self._kind == "path" else None

    def image_source(self, index: int) -> str:
        """How to name image `index` in a message: its path, or the .bin file and index."""
        image = self.images[index]
        return image if isinstance(image, str) else f"{self.source} image {index}"

    def read(self, index: int) -> bytes:
        """Encoded bytes of image `index`, read from disk for path-based sets."""
        image = self.images[index]
        if not isinstance(image, str):
            return bytes(image)
        return read_file_bytes(image)[0]


class VerificationImages(Dataset):
    """Item i: (i, unique image i of the set as a uint8 3x112x112 tensor).

    BGR by default, as the GraFIQs scripts read images with cv2; pass bgr2rgb=True for
    RGB models (insightface decodes .bin images to RGB).
    """

    def __init__(self, vset: VerificationSet, bgr2rgb: bool = False, size: int = INPUT_SIZE):
        self.vset = vset
        self.bgr2rgb = bgr2rgb
        self.size = size

    def __len__(self) -> int:
        return self.vset.num_images

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image = decode_image(self.vset.read(index), self.bgr2rgb, source=self.vset.image_source(index))
        return index, to_model_tensor(image, self.size)


# --------------------------------------------------------------------------- .bin pickles


def _numpy_attr(submodule: str, name: str) -> Any:
    """numpy's private pickle helpers, wherever this numpy keeps them (numpy._core or numpy.core)."""
    import importlib

    for base in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{base}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this numpy has no {submodule}.{name}")


def _latin1_only(encoding: str) -> None:
    if not isinstance(encoding, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"refusing to encode with codec {encoding!r}")


def _safe_codecs_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """`_codecs.encode` as Python 3 protocol-2 pickles use it for bytes: latin-1 of a str only."""
    _latin1_only(encoding)
    if not isinstance(text, str):
        raise pickle.UnpicklingError("refusing _codecs.encode of a non-string")
    return text.encode("latin-1")


def _safe_bytes(*args: Any) -> bytes:
    """`bytes()` / `bytes(str, 'latin-1')` as protocol-2 pickles write them; never `bytes(huge_int)`."""
    if not args:
        return b""
    if len(args) == 2 and isinstance(args[0], str):
        _latin1_only(args[1])
        return args[0].encode("latin-1")
    raise pickle.UnpicklingError("refusing bytes() with these arguments")


def _safe_bytearray(*args: Any) -> bytearray:
    return bytearray(_safe_bytes(*args))


_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_attr("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_attr("multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_attr("multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_attr("multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_attr("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_attr("numeric", "_frombuffer"),
    ("_codecs", "encode"): lambda: _safe_codecs_encode,
    ("builtins", "bytes"): lambda: _safe_bytes,
    ("builtins", "bytearray"): lambda: _safe_bytearray,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Knows only the globals of `_ALLOWED_GLOBALS`; everything else is refused, never imported."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        resolver = _ALLOWED_GLOBALS.get((module, name))
        if resolver is None:
            raise UnsafePickleError(
                f"{self.source}: refused to load global '{module}.{name}': .bin files only need numpy arrays and bytes, "
                "this one could run code; do not use it (re-create it with write_bin_pairs from trusted images)"
            )
        return resolver()


_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _check_pickle_stream(data: bytes) -> None:
    """Walk the opcodes without running them: every length must fit in the data and every
    memo index be plausible, because CPython's unpickler allocates what the stream says
    (a forged LONG_BINPUT index alone makes it allocate and zero tens of GB)."""
    import pickletools

    for count, (opcode, argument, _) in enumerate(pickletools.genops(io.BytesIO(data))):
        if opcode.name in _MEMO_PUTS and not (isinstance(argument, int) and 0 <= argument <= count):
            raise ValueError(f"memo index {argument} out of range")


def _as_image_bytes(item: Any, index: int, source: str) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    raise VerificationDataError(
        f"{source}: image {index} is a {type(item).__name__}, expected encoded image bytes; not an insightface .bin pair set"
    )


def _as_flags(issame: Any, source: str) -> np.ndarray:
    if isinstance(issame, np.ndarray):
        items = issame.reshape(-1).tolist() if issame.ndim == 1 else None
    elif isinstance(issame, (list, tuple)):
        items = list(issame)
    else:
        items = None
    if items is None:
        raise VerificationDataError(f"{source}: the genuine flags are a {type(issame).__name__}, expected a list of booleans")
    for i, item in enumerate(items):
        if not (isinstance(item, (bool, np.bool_)) or (isinstance(item, (int, np.integer)) and item in (0, 1))):
            raise VerificationDataError(f"{source}: genuine flag {i} is {item!r:.40}, expected a boolean")
    return np.asarray([bool(item) for item in items], dtype=bool)


def _validate_bin(obj: Any, source: str) -> tuple[list[bytes], np.ndarray]:
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        kind = f"a {type(obj).__name__}" + (f" of {len(obj)} items" if isinstance(obj, (tuple, list)) else "")
        raise VerificationDataError(f"{source}: holds {kind}, expected (images, issame_list); not an insightface .bin pair set")
    bins, issame = obj
    if isinstance(bins, np.ndarray) and bins.ndim == 1 and bins.dtype.kind in "OS":
        bins = bins.tolist()  # an object array of bytes, or a fixed-width bytes array
    if not isinstance(bins, (list, tuple)):
        kind = f"{type(bins).__name__}" + (f" of dtype {bins.dtype}" if isinstance(bins, np.ndarray) else "")
        raise VerificationDataError(f"{source}: images are a {kind}, expected a list of encoded images")
    flags = _as_flags(issame, source)
    if len(bins) != 2 * len(flags):
        raise VerificationDataError(
            f"{source}: {len(bins)} images for {len(flags)} pairs, expected 2 images per pair; the file is inconsistent"
        )
    if len(flags) == 0:
        raise VerificationDataError(f"{source}: holds no pairs")
    return [_as_image_bytes(item, i, source) for i, item in enumerate(bins)], flags


def load_bin_pairs(path: str | os.PathLike) -> VerificationSet:
    """insightface `.bin` (pickle of (2N encoded images, N genuine flags)) -> VerificationSet.

    Pair i is images (2i, 2i+1). Unpickled with encoding='bytes' (the files come from
    Python 2) by a restricted unpickler: a file naming any other global is refused.
    """
    source = str(path)
    try:
        data = read_bytes(path, ".bin pair file")
    except ReadError as error:
        raise VerificationDataError(f"{source}: .bin pair file {error.reason}" if error.reason == "not found"
                                    else f"{source}: cannot be read ({error.reason})") from None
    try:
        _check_pickle_stream(data)
        obj = _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except Exception as error:  # a damaged pickle can fail in many ways; all mean "not a valid .bin"
        raise VerificationDataError(
            f"{source}: not a readable .bin pair set ({type(error).__name__}: {str(error)[:200]}); the file is damaged or of another kind"
        ) from None
    images, flags = _validate_bin(obj, source)
    count = len(flags)
    pairs = np.arange(2 * count, dtype=np.int64).reshape(count, 2)
    return VerificationSet(source, images, pairs, flags, [f"{i:06d}" for i in range(2 * count)])


def write_bin_pairs(path: str | os.PathLike, images_bytes: Sequence[bytes], issame: Iterable[bool]) -> None:
    """Write an insightface-style `.bin`: pickle of (list of encoded images, list of bools).

    Pair i is (images_bytes[2i], images_bytes[2i+1]). Written under a temporary name, then renamed.
    """
    source = str(path)
    images, flags = _validate_bin((list(images_bytes), list(issame)), source)
    target = Path(path)
    temp = target.with_name(target.name + ".partial")
    try:
        with open(temp, "wb") as handle:
            pickle.dump((images, [bool(flag) for flag in flags]), handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temp, target)
    finally:
        if temp.exists():
            temp.unlink()


# --------------------------------------------------------------------------- text pair lists


def _read_lines(path: Path, what: str) -> list[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) of the non-blank lines of a text list."""
    try:
        text = read_bytes(path, what).decode("utf-8")
    except ReadError as error:
        raise VerificationDataError(f"{path}: {what} not found" if error.reason == "not found"
                                    else f"{path}: cannot be read ({error.reason})") from None
    except UnicodeDecodeError as error:
        raise VerificationDataError(f"{path}: not a UTF-8 text file (byte {error.start}); expected a {what}") from None
    return [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


class _ImageTable:
    """Unique images by relative name, remembering the first line that uses each."""

    def __init__(self, root: str):
        self.root = root
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        self.paths: list[str] = []
        self.first_line: list[int] = []

    def add(self, name: str, line: int) -> int:
        found = self.index.get(name)
        if found is None:
            found = self.index[name] = len(self.names)
            self.names.append(name)
            self.paths.append(os.path.join(self.root, name))
            self.first_line.append(line)
        return found

    def check_exist(self, list_path: Path) -> None:
        missing = [(line, path) for line, path in zip(self.first_line, self.paths) if not os.path.isfile(path)]
        if missing:
            shown = "; ".join(f"line {line}: {path}" for line, path in missing[:MAX_REPORTED_MISSING])
            more = f"; and {len(missing) - MAX_REPORTED_MISSING} more" if len(missing) > MAX_REPORTED_MISSING else ""
            raise VerificationDataError(
                f"{list_path}: {len(missing)} image(s) named in the list are missing: {shown}{more}; "
                f"check the image root {self.root}"
            )


def _non_negative_int(text: str, path: Path, number: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise VerificationDataError(f"{path}: line {number}: {what} {text!r} is not a non-negative integer")
    return value


def load_lfw_pairs(pairs_txt: str | os.PathLike, images_root: str | os.PathLike, extension: str = "jpg") -> VerificationSet:
    """LFW `pairs.txt` -> VerificationSet of image paths `<root>/<name>/<name>_<idx:04d>.<extension>`.

    The first line is `folds<TAB>pairs_per_fold` (10 300 for the LFW view-2 protocol)
    or a single count n (the dev files: one fold). Each fold is n genuine lines
    `name i j` and n impostor lines `name1 i name2 j`, so 2 * folds * n lines must follow.
    All images must exist.
    """
    path = Path(pairs_txt)
    lines = _read_lines(path, "LFW pairs.txt")
    if not lines:
        raise VerificationDataError(f"{path}: empty; expected a header line '10<TAB>300' and pair lines")
    number, header = lines[0]
    try:
        if len(header) not in (1, 2):
            raise ValueError
        counts = [int(value) for value in header]
        if min(counts) <= 0:
            raise ValueError
    except ValueError:
        raise VerificationDataError(
            f"{path}: line {number} is {' '.join(header)[:80]!r}, expected the header 'folds<TAB>pairs_per_fold' (e.g. '10 300') or a pair count"
        ) from None
    folds, per_fold = (1, counts[0]) if len(counts) == 1 else counts
    body = lines[1:]
    if len(body) != 2 * folds * per_fold:
        raise VerificationDataError(
            f"{path}: header says {folds} fold(s) of {per_fold} genuine + {per_fold} impostor pairs "
            f"({2 * folds * per_fold} lines), but {len(body)} pair lines follow"
        )
    return _lfw_style_set(path, body, images_root, extension, folds)


def _lfw_style_set(path: Path, body: list[tuple[int, list[str]]], images_root: str | os.PathLike, extension: str,
                   folds: int | None) -> VerificationSet:
    """Pair lines `name i j` (genuine) or `name1 i name2 j` (impostor) naming `<root>/<name>/<name>_<idx:04d>.<ext>`."""
    extension = extension.lstrip(".")
    table = _ImageTable(str(images_root))
    pairs, issame = [], []
    for number, fields in body:
        if len(fields) == 3:
            first = (fields[0], _non_negative_int(fields[1], path, number, "image number"))
            second = (fields[0], _non_negative_int(fields[2], path, number, "image number"))
        elif len(fields) == 4:
            first = (fields[0], _non_negative_int(fields[1], path, number, "image number"))
            second = (fields[2], _non_negative_int(fields[3], path, number, "image number"))
        else:
            raise VerificationDataError(
                f"{path}: line {number} has {len(fields)} fields, expected 'name i j' (genuine) or 'name1 i name2 j' (impostor)"
            )
        pairs.append([table.add(f"{name}/{name}_{idx:04d}.{extension}", number) for name, idx in (first, second)])
        issame.append(len(fields) == 3)
    table.check_exist(path)
    return VerificationSet(str(path), table.paths, np.asarray(pairs), np.asarray(issame), table.names, folds=folds)


def load_pair_list(dataset_dir: str | os.PathLike) -> VerificationSet:
    """CR-FIQA evaluation layout -> VerificationSet.

    `<dataset>/pair_list.txt` has lines `<name_a> <name_b> <1 genuine | 0 impostor>`,
    names being file names relative to `<dataset>/images/`. All images must exist.
    """
    folder = Path(dataset_dir)
    list_path, images_dir = folder / "pair_list.txt", folder / "images"
    if not images_dir.is_dir():
        raise VerificationDataError(f"{images_dir}: image folder not found; a pair-list dataset is <dataset>/images/ + <dataset>/pair_list.txt")
    lines = _read_lines(list_path, "pair_list.txt")
    table = _ImageTable(str(images_dir))
    pairs, issame = [], []
    for number, fields in lines:
        if len(fields) != 3 or fields[2] not in ("0", "1"):
            raise VerificationDataError(
                f"{list_path}: line {number} is {' '.join(fields)[:80]!r}, expected '<name_a> <name_b> <1 genuine | 0 impostor>'"
            )
        pairs.append([table.add(fields[0], number), table.add(fields[1], number)])
        issame.append(fields[2] == "1")
    if not pairs:
        raise VerificationDataError(f"{list_path}: no pairs listed")
    table.check_exist(list_path)
    return VerificationSet(str(list_path), table.paths, np.asarray(pairs), np.asarray(issame), table.names)


def load_xqlfw_pairs(pairs_txt: str | os.PathLike, images_dir: str | os.PathLike, extension: str = "jpg") -> VerificationSet:
    """XQLFW `xqlfw_pairs.txt` -> VerificationSet of image paths `<dir>/<name>/<name>_<idx:04d>.<extension>`.

    The LFW pair lines (`name i j` genuine, `name1 i name2 j` impostor) after a first line
    that is a header and is skipped without being interpreted (XQLFW's does not describe
    folds as LFW's does). `images_dir` is the aligned 112x112 folder. All images must exist.
    """
    path = Path(pairs_txt)
    body = _read_lines(path, "XQLFW pairs file")[1:]
    if not body:
        raise VerificationDataError(f"{path}: no pair lines after the header line")
    return _lfw_style_set(path, body, images_dir, extension, folds=None)


MAX_ALL_VS_ALL_PAIRS = 50_000_000  # 2 x int64 per pair: 800 MB of indices, and evaluation arrays of that length


def identity_folder_pairs(folder: str | os.PathLike, extensions: Sequence[str] | None = None,
                          max_pairs: int = MAX_ALL_VS_ALL_PAIRS) -> VerificationSet:
    """All-vs-all protocol of `folder/<identity>/<image>` (as CR-FIQA evaluates Adience) -> VerificationSet.

    Every unordered pair of distinct images, genuine iff both lie in the same identity
    folder. N images give N(N-1)/2 pairs, so a set whose pair count exceeds `max_pairs` is
    refused rather than exhausting memory. Images are sorted by identity, then file name;
    names are `<identity>/<file>`. An image directly in `folder` has no identity and is refused.
    """
    root = Path(folder)
    if not root.is_dir():
        raise VerificationDataError(f"{root}: identity folder not found; expected <folder>/<identity>/<image>")
    wanted = set(parse_extensions(extensions))

    def is_image(entry: Path) -> bool:
        return entry.suffix.lstrip(".").lower() in wanted and not entry.is_dir()

    loose = sorted(entry.name for entry in root.iterdir() if is_image(entry))
    if loose:
        raise VerificationDataError(
            f"{root}: images directly in the folder have no identity ({', '.join(loose[:MAX_REPORTED_MISSING])}); "
            "put each identity's images in a sub-folder <folder>/<identity>/"
        )
    names, identity = [], []
    for label, person in enumerate(sorted(entry for entry in root.iterdir() if entry.is_dir())):
        files = sorted(entry.name for entry in person.iterdir() if is_image(entry))
        names += [f"{person.name}/{name}" for name in files]
        identity += [label] * len(files)
    count = len(names)
    num_pairs = count * (count - 1) // 2
    if count < 2:
        raise VerificationDataError(f"{root}: {count} image(s) with extension {', '.join(sorted(wanted))} in identity "
                                    "sub-folders; an all-vs-all protocol needs at least 2")
    if num_pairs > max_pairs:
        raise VerificationDataError(
            f"{root}: {count} images give {num_pairs:,} all-vs-all pairs, more than max_pairs={max_pairs:,}; "
            "raise max_pairs if the memory allows (about 33 bytes per pair while building the set, more in evaluation)"
        )
    first, second = np.triu_indices(count, k=1)
    identity = np.asarray(identity)
    paths = [os.path.join(str(root), name) for name in names]
    return VerificationSet(str(root), paths, np.stack([first, second], axis=1), identity[first] == identity[second], names)
