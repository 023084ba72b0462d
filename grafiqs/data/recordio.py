"""Pure-Python reading and writing of insightface RecordIO training sets (no mxnet).

A set is `train.rec` (records), `train.idx` (text `key<TAB>offset` per line) and
`property` (text `num_classes,height,width`). A record on disk is
`[uint32 magic 0xced7230a][uint32 lrec][payload][zero pad to 4 bytes]`, little-endian;
`lrec & (2**29 - 1)` is the length and `lrec >> 29` a continuation flag: mxnet's writer
cuts a payload wherever the magic number sits at a 4-byte aligned position and the reader
glues the parts back with the magic bytes between them (0 whole, 1 first, 2 middle, 3 last).

A payload is an IRHeader `<IfQQ` (flag, label, id, id2); when `flag > 0`, `flag`
float32 labels follow; then the encoded image. Record 0 of an insightface set is a
header whose labels are `[id_start, id_end]`: image records are keys `1 .. id_start-1`
and keys `id_start .. id_end-1` are identity ranges `[first, last+1]` with no image.

Every problem in a file comes out as `RecordIOError` (an `InputError`) naming the file
and the offset or key: lengths are checked against the file size before anything is
read, so a corrupt file can never make us allocate or read past its end.
"""
from __future__ import annotations

import math
import os
import struct
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import cv2
import numpy as np
from torch.utils.data import Dataset

from grafiqs.data.decode import decode_image
from grafiqs.errors import InputError, ReadError
from grafiqs.io.reading import open_regular, read_bytes

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
JPEG_QUALITY = 95
_FLOAT32_EXACT = 1 << 24  # integers above this are not all representable as float32 labels

REC_NAME, IDX_NAME, PROPERTY_NAME = "train.rec", "train.idx", "property"


class RecordIOError(InputError):
    """A RecordIO file (.rec, .idx, property) is corrupt, truncated or inconsistent."""


class IRHeader(NamedTuple):
    """mxnet's image-record header. `label` is a float, or a tuple of floats when `flag > 0`."""

    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int


# --------------------------------------------------------------------------- records


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _read_one_record(file, offset: int, file_size: int, path: str) -> tuple[bytes, int]:
    """Read the (possibly split) record that starts at `offset`; return (payload, next offset).

    `file` must be positioned at `offset`. Every length is checked against `file_size`
    before reading, so the memory used is bounded by the file itself.
    """
    parts: list[bytes] = []
    position = offset
    while True:
        if position + 8 > file_size:
            where = "record" if not parts else "continuation part of the record"
            raise RecordIOError(
                f"{path}: truncated {where} at offset {position} (record starts at {offset}): "
                f"8 header bytes needed, {max(file_size - position, 0)} left; the file is cut short, re-download or re-pack it"
            )
        head = file.read(8)
        if len(head) != 8:
            raise RecordIOError(f"{path}: could not read the record header at offset {position} (file shrank while reading?)")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise RecordIOError(
                f"{path}: bad magic number 0x{magic:08x} at offset {position} (expected 0x{MAGIC:08x}); "
                "the file is corrupt, not a RecordIO file, or the index points to the wrong place"
            )
        flag, length = lrec >> 29, lrec & LENGTH_MASK
        if not parts and flag not in (0, 1):
            raise RecordIOError(
                f"{path}: offset {position} is the middle of a split record (continuation flag {flag}); "
                "the index offset is wrong, rebuild train.idx"
            )
        if parts and flag not in (2, 3):
            raise RecordIOError(
                f"{path}: split record at offset {offset} has a part with continuation flag {flag} at offset {position} "
                "(expected 2 or 3); the file is corrupt"
            )
        padded = _align4(length)
        if position + 8 + padded > file_size:
            raise RecordIOError(
                f"{path}: record at offset {position} says its length is {length} bytes, "
                f"past the end of the file ({file_size} bytes); the file is truncated or corrupt"
            )
        body = file.read(padded)
        if len(body) != padded:
            raise RecordIOError(f"{path}: could not read {padded} bytes at offset {position + 8} (file shrank while reading?)")
        parts.append(body[:length])
        position += 8 + padded
        if flag in (0, 3):
            return MAGIC_BYTES.join(parts), position


def _split_payload(payload: bytes) -> list[tuple[int, bytes]]:
    """Cut a payload as dmlc's RecordIOWriter does: at every 4-byte aligned magic number."""
    cuts: list[int] = []
    start = payload.find(MAGIC_BYTES)
    while start != -1:
        if start % 4 == 0:
            cuts.append(start)
            start = payload.find(MAGIC_BYTES, start + 4)
        else:
            start = payload.find(MAGIC_BYTES, start + 1)
    if not cuts:
        return [(0, payload)]
    parts: list[tuple[int, bytes]] = []
    begin = 0
    for i, cut in enumerate(cuts):
        parts.append((1 if i == 0 else 2, payload[begin:cut]))
        begin = cut + 4
    parts.append((3, payload[begin:]))
    return parts


def encode_record(payload: bytes) -> bytes:
    """Payload -> the bytes of one on-disk record (split at magic numbers, zero padded)."""
    if len(payload) > LENGTH_MASK:
        raise RecordIOError(f"record payload of {len(payload)} bytes is too large for RecordIO (at most {LENGTH_MASK})")
    out = bytearray()
    for flag, part in _split_payload(bytes(payload)):
        out += struct.pack("<II", MAGIC, (flag << 29) | len(part))
        out += part
        out += b"\x00" * (_align4(len(part)) - len(part))
    return bytes(out)


def pack_record(image: bytes, label: float | Sequence[float], id: int = 0, id2: int = 0) -> bytes:
    """IRHeader + encoded image, as mxnet's `recordio.pack`: a sequence label sets `flag` to its length."""
    if isinstance(label, (int, float, np.integer, np.floating)):
        return struct.pack(IR_FORMAT, 0, float(label), id, id2) + bytes(image)
    labels = np.asarray(label, dtype="<f4").reshape(-1)
    return struct.pack(IR_FORMAT, labels.size, 0.0, id, id2) + labels.tobytes() + bytes(image)


def unpack_record(payload: bytes, source: str = "record") -> tuple[IRHeader, int, bytes]:
    """Payload -> (header, integer label, encoded image bytes).

    The label is the header's float label, or the first of the extra labels when
    `flag > 0` (as insightface does). It must be a finite integer value: class labels
    and key ranges always are, anything else means a corrupt record.
    """
    payload = bytes(payload)
    if len(payload) < IR_SIZE:
        raise RecordIOError(f"{source}: payload is {len(payload)} bytes, shorter than the {IR_SIZE}-byte IRHeader; the record is corrupt")
    flag, label, id_, id2 = struct.unpack_from(IR_FORMAT, payload)
    image_start = IR_SIZE
    value: float | tuple[float, ...] = label
    if flag > 0:
        image_start = IR_SIZE + 4 * flag
        if image_start > len(payload):
            raise RecordIOError(
                f"{source}: IRHeader flag says {flag} labels follow, but the payload has only "
                f"{(len(payload) - IR_SIZE) // 4} label slots; the record is corrupt"
            )
        value = tuple(float(x) for x in np.frombuffer(payload, dtype="<f4", count=flag, offset=IR_SIZE))
        label = value[0]
    if not math.isfinite(label) or label != int(label):
        raise RecordIOError(f"{source}: IRHeader label {label!r} is not an integer; the record is corrupt")
    return IRHeader(flag, value, id_, id2), int(label), payload[image_start:]


# --------------------------------------------------------------------------- index


def _read_index_fast(idx_path: str, rec_size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """numpy's C text parser for well-formed indexes (millions of lines); None on any doubt."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. numpy's "integers parsed from floats" is a doubt
            table = np.loadtxt(idx_path, dtype=np.int64, comments=None, ndmin=2, encoding="utf-8")
    except Exception:  # the careful parser below finds and names the problem
        return None
    if table.ndim != 2 or table.shape[1] != 2 or table.shape[0] == 0:
        return None
    keys, offsets = table[:, 0].copy(), table[:, 1].copy()
    if keys.min() < 0 or offsets.min() < 0 or (offsets > rec_size - 8).any():
        return None
    return keys, offsets


def _read_index_careful(idx_path: str, rec_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Line by line, naming the first bad line."""
    try:
        text = read_bytes(idx_path, "RecordIO index").decode("utf-8")
    except ReadError as error:
        raise RecordIOError(f"{idx_path}: index file not found; give the train.idx written with the .rec"
                            if error.reason == "not found" else f"{idx_path}: cannot be read ({error.reason})") from None
    except UnicodeDecodeError as error:
        raise RecordIOError(f"{idx_path}: not a text index (byte {error.start} is not UTF-8); is this the .rec file?") from None
    keys: list[int] = []
    offsets: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 2:
                raise ValueError
            key, offset = int(fields[0]), int(fields[1])
        except ValueError:
            raise RecordIOError(
                f"{idx_path}: line {number} is {line[:80]!r}, expected 'key<TAB>offset' with two integers; the index is corrupt"
            ) from None
        if key < 0 or offset < 0 or key >= 1 << 63:
            raise RecordIOError(f"{idx_path}: line {number} has a negative or too large key/offset ({line[:80]!r})")
        if offset + 8 > rec_size:
            raise RecordIOError(
                f"{idx_path}: line {number}: offset {offset} of key {key} is past the end of the .rec file "
                f"({rec_size} bytes); the index does not belong to this .rec or the .rec is truncated"
            )
        keys.append(key)
        offsets.append(offset)
    return np.asarray(keys, dtype=np.int64), np.asarray(offsets, dtype=np.int64)


def _parse_index(idx_path: str, rec_size: int) -> tuple[np.ndarray, np.ndarray]:
    """train.idx -> (keys, offsets) in file order, every offset checked against the .rec size."""
    parsed = _read_index_fast(idx_path, rec_size) if os.path.isfile(idx_path) else None
    keys, offsets = parsed if parsed is not None else _read_index_careful(idx_path, rec_size)
    sorted_keys = np.sort(keys)
    repeated = sorted_keys[1:][sorted_keys[1:] == sorted_keys[:-1]]
    if len(repeated):
        raise RecordIOError(f"{idx_path}: key {int(repeated[0])} appears more than once; the index is corrupt")
    return keys, offsets


def _open_rec(path: str):
    """The .rec file opened through the one check of every read (a regular file, non-blocking: a FIFO or a device
    named train.rec is refused at once instead of blocking)."""
    try:
        return open_regular(path, "RecordIO file", limit=None)
    except ReadError as error:
        raise RecordIOError(f"{path}: cannot be opened ({error.reason})") from None


class RecordIOReader:
    """Records of a .rec file: random access by key through the .idx, or streaming in file order.

    The file is opened on first use and reopened when the process id changes, so a
    reader made in the main process works in forked DataLoader workers (each gets its
    own handle) and pickles for spawned ones (the handle is not pickled).
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.rec_path = str(rec_path)
        self.idx_path = None if idx_path is None else str(idx_path)
        try:
            self._size = os.stat(self.rec_path).st_size
        except FileNotFoundError:
            raise RecordIOError(f"{self.rec_path}: RecordIO file not found") from None
        except OSError as error:
            raise RecordIOError(f"{self.rec_path}: cannot be read ({error.strerror or error})") from None
        if self.idx_path is None:
            self._keys = self._sorted_keys = self._sorted_offsets = None
        else:
            self._keys, offsets = _parse_index(self.idx_path, self._size)
            order = np.argsort(self._keys, kind="stable")
            self._sorted_keys, self._sorted_offsets = self._keys[order], offsets[order]
        self._file = None
        self._pid = None
        self._lock = threading.Lock()

    # Pickling for spawned workers: drop the handle and the lock, reopen lazily.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"], state["_pid"], state["_lock"] = None, None, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _handle(self):
        if self._file is None or self._pid != os.getpid():
            self._file = _open_rec(self.rec_path)
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self) -> "RecordIOReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @property
    def has_index(self) -> bool:
        return self._keys is not None

    def _require_index(self) -> None:
        if self._keys is None:
            raise RecordIOError(f"{self.rec_path}: random access needs the .idx file; pass idx_path (or iterate the reader)")

    def keys(self) -> list[int]:
        """Index keys in the order of the .idx file."""
        self._require_index()
        return self._keys.tolist()

    # No __len__: list(reader) must work without an index, and len() would need one.

    def sorted_keys(self) -> np.ndarray:
        """Index keys in increasing order (int64 array, no copy: do not modify)."""
        self._require_index()
        return self._sorted_keys

    def sorted_offsets(self) -> np.ndarray:
        """The offsets of `sorted_keys()`, in the same order (int64 array, no copy: do not modify)."""
        self._require_index()
        return self._sorted_offsets

    @property
    def size(self) -> int:
        """Bytes of the .rec file when the reader was made."""
        return self._size

    def _position(self, key: int) -> int | None:
        self._require_index()
        if not isinstance(key, (int, np.integer)) or not 0 <= key < 1 << 63:
            return None
        i = int(np.searchsorted(self._sorted_keys, key))
        return i if i < len(self._sorted_keys) and self._sorted_keys[i] == key else None

    def __contains__(self, key: int) -> bool:
        return self._position(key) is not None

    def offset(self, key: int) -> int:
        """Byte offset of record `key` in the .rec file."""
        i = self._position(key)
        if i is None:
            raise RecordIOError(f"{self.idx_path}: key {key!r} is not in the index")
        return int(self._sorted_offsets[i])

    def read_at(self, offset: int) -> bytes:
        """Payload of the record that starts at byte `offset`."""
        if offset < 0 or offset + 8 > self._size:
            raise RecordIOError(f"{self.rec_path}: offset {offset} is past the end of the file ({self._size} bytes)")
        if self._pid is not None and self._pid != os.getpid():
            self._lock = threading.Lock()  # a lock copied by fork may be held by a parent thread
        with self._lock:
            handle = self._handle()
            handle.seek(offset)
            payload, _ = _read_one_record(handle, offset, self._size, self.rec_path)
        return payload

    def read(self, key: int) -> bytes:
        """Payload of the record with index key `key`."""
        offset = self.offset(key)
        try:
            return self.read_at(offset)
        except RecordIOError as error:
            raise RecordIOError(f"{error} [key {key}]") from None

    def scan(self) -> Iterator[tuple[int, bytes]]:
        """(offset, payload) of every record in file order; needs no index, uses its own handle."""
        handle = _open_rec(self.rec_path)
        with handle:
            size = os.fstat(handle.fileno()).st_size
            position = 0
            while position < size:
                payload, following = _read_one_record(handle, position, size, self.rec_path)
                yield position, payload
                position = following

    def __iter__(self) -> Iterator[bytes]:
        for _, payload in self.scan():
            yield payload


# --------------------------------------------------------------------------- writing


class RecordIOWriter:
    """Appends records to a .rec file and `key<TAB>offset` lines to its .idx, as mxnet does."""

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.rec_path, self.idx_path = str(rec_path), None if idx_path is None else str(idx_path)
        self._rec = open(self.rec_path, "wb")
        self._idx = None if idx_path is None else open(self.idx_path, "w", encoding="utf-8")

    def write(self, payload: bytes, key: int | None = None) -> int:
        """Write one record; return its offset. With an .idx, `key` is required."""
        if self._idx is not None and key is None:
            raise InputError("RecordIOWriter.write: a key is needed when writing an index")
        offset = self._rec.tell()
        self._rec.write(encode_record(payload))
        if self._idx is not None:
            self._idx.write(f"{int(key)}\t{offset}\n")
        return offset

    def overwrite(self, offset: int, payload: bytes, expected_size: int) -> None:
        """Rewrite the record at `offset` in place; its on-disk size must not change."""
        record = encode_record(payload)
        if len(record) != expected_size:
            raise InputError(f"{self.rec_path}: in-place rewrite at offset {offset} changes the record size")
        end = self._rec.tell()
        self._rec.seek(offset)
        self._rec.write(record)
        self._rec.seek(end)

    def close(self) -> None:
        self._rec.close()
        if self._idx is not None:
            self._idx.close()

    def __enter__(self) -> "RecordIOWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _as_encoded(image: Any, index: int) -> tuple[bytes, tuple[int, int]]:
    """A sample's image -> (JPEG or given encoded bytes, (height, width))."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        decoded = decode_image(data, source=f"sample {index}")
        return data, decoded.shape[:2]
    array = np.asarray(image)
    if array.dtype != np.uint8 or not (array.ndim == 3 and array.shape[2] == 3 or array.ndim == 2) or 0 in array.shape:
        raise InputError(
            f"sample {index}: image must be a uint8 HxWx3 BGR array (or encoded bytes), got dtype {array.dtype} shape {array.shape}"
        )
    ok, buffer = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise InputError(f"sample {index}: cv2 could not JPEG-encode the image (shape {array.shape})")
    return buffer.tobytes(), array.shape[:2]


def _as_label(label: Any, index: int) -> int:
    try:
        value = int(label)
        exact = value == label
    except (TypeError, ValueError, OverflowError):
        exact = False
    if not exact or value < 0 or value >= _FLOAT32_EXACT:
        raise InputError(f"sample {index}: label {label!r} must be a non-negative integer below {_FLOAT32_EXACT} (a float32 label)")
    return value


def write_recordio(root: str | os.PathLike, samples: Iterable[tuple[Any, int]]) -> int:
    """Write `root/train.rec`, `train.idx` and `property` from (BGR uint8 image, label) samples.

    Layout as insightface's: header record 0 with labels [id_start, id_end], image
    records 1..n (JPEG quality 95 from BGR, so decoding with bgr2rgb=True gives RGB as
    insightface does; an image given as bytes is stored as it is), then one identity
    record per class 0..max label with labels [first key, last key + 1] ([0, 0] for a
    class with no image). Samples of one label must come together (sorted or grouped)
    so that identity ranges are contiguous. `property` holds the first image's size.
    Files are written under temporary names and renamed at the end. Returns num_classes.
    """
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    finals = [folder / REC_NAME, folder / IDX_NAME, folder / PROPERTY_NAME]
    temps = [path.with_name(path.name + ".partial") for path in finals]
    header_placeholder = pack_record(b"", [0.0, 0.0])
    ranges: dict[int, tuple[int, int]] = {}
    try:
        with RecordIOWriter(temps[0], temps[1]) as writer:
            header_offset = writer.write(header_placeholder, key=0)
            header_size = len(encode_record(header_placeholder))
            key = 0
            current: int | None = None
            size: tuple[int, int] | None = None
            for index, (image, label) in enumerate(samples):
                value = _as_label(label, index)
                if value != current and value in ranges:
                    raise InputError(
                        f"sample {index}: label {value} appears again after other labels; "
                        "give the samples grouped by label (e.g. sorted by label)"
                    )
                data, shape = _as_encoded(image, index)
                size = size or shape
                key += 1
                writer.write(pack_record(data, float(value), id=key), key=key)
                first = ranges.get(value, (key, key))[0]
                ranges[value] = (first, key + 1)
                current = value
            if not ranges:
                raise InputError(f"write_recordio({root}): no samples given")
            num_classes = max(ranges) + 1
            id_start = key + 1
            for label in range(num_classes):
                first, end = ranges.get(label, (0, 0))
                writer.write(pack_record(b"", [float(first), float(end)], id=id_start + label), key=id_start + label)
            writer.overwrite(header_offset, pack_record(b"", [float(id_start), float(id_start + num_classes)]), header_size)
        temps[2].write_text(f"{num_classes},{size[0]},{size[1]}\n", encoding="utf-8")
        for temp, final in zip(temps, finals):
            os.replace(temp, final)
    finally:
        for temp in temps:
            if temp.exists():
                temp.unlink()
    return num_classes


# --------------------------------------------------------------------------- dataset


def read_property(path: str | os.PathLike) -> tuple[int, int, int]:
    """`property` file -> (num_classes, height, width)."""
    try:
        text = read_bytes(path, "RecordIO property file", limit=2**20).decode("utf-8").strip()
    except ReadError as error:
        raise RecordIOError(f"{path}: cannot be read ({error.reason})") from None
    except UnicodeDecodeError:
        raise RecordIOError(f"{path}: not a text file; expected 'num_classes,height,width'") from None
    fields = [field.strip() for field in text.split(",")]
    try:
        if len(fields) != 3:
            raise ValueError
        num_classes, height, width = (int(field) for field in fields)
        if num_classes <= 0 or height <= 0 or width <= 0:
            raise ValueError
    except ValueError:
        raise RecordIOError(
            f"{path}: content {text[:80]!r} is not 'num_classes,height,width' with positive integers "
            "(e.g. '85742,112,112'); fix it or delete it to count classes from the labels"
        ) from None
    return num_classes, height, width


def image_keys_of(reader: RecordIOReader) -> tuple[np.ndarray, tuple[int, int] | None]:
    """(the image keys in increasing order, the header's (id_start, id_end) or None) of an indexed reader.

    With a header record 0 (flag > 0) the images are the keys 1..id_start-1 (the rest are identity ranges); with
    a plain record 0 (flag 0) or no key 0, every key of the index is an image.
    """
    keys = reader.sorted_keys()
    if 0 not in reader:
        return keys, None
    source = f"{reader.rec_path} key 0"
    header, _, _ = unpack_record(reader.read(0), source)
    if header.flag == 0:
        return keys, None
    if header.flag < 2:
        raise RecordIOError(f"{source}: header record has {header.flag} label, expected [id_start, id_end]")
    id_start, id_end = header.label[0], header.label[1]
    if not (math.isfinite(id_start) and math.isfinite(id_end) and 1 <= id_start <= id_end and id_start == int(id_start)):
        raise RecordIOError(f"{source}: header record labels {list(header.label[:2])} are not a valid [id_start, id_end] range")
    span = (int(id_start), int(id_end))
    image_keys = keys[(keys >= 1) & (keys < span[0])]
    # float32 labels are exact up to 2**24; above that the range can be off by rounding.
    if len(image_keys) != span[0] - 1 and span[0] <= _FLOAT32_EXACT:
        raise RecordIOError(
            f"{reader.idx_path}: header record says images are keys 1..{span[0] - 1}, "
            f"but the index has {len(image_keys)} of them; the index is incomplete or belongs to another .rec"
        )
    if len(image_keys) == 0:
        raise RecordIOError(f"{reader.rec_path}: no image records (header id_start is {span[0]})")
    return image_keys, span


class RecordIODataset(Dataset):
    """Item i: (image i, its integer label) from `root/train.rec` + `root/train.idx`.

    Images decode to RGB by default (`bgr2rgb=True`): the records are JPEGs of BGR
    arrays and insightface decodes them to RGB, so models trained on these sets are
    RGB models. The image is a uint8 HxWx3 array, or `transform(image)`.

    With a header record 0 (flag > 0) the images are the keys 1..id_start-1; with a
    plain record 0 (flag 0) or no key 0, every key of the index is an image.
    `num_classes` comes from `root/property`; without that file, from the header's
    identity count, else from max label + 1 over all images (one pass over the file).
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None, bgr2rgb: bool = True):
        self.root = Path(root)
        rec_path, idx_path = self.root / REC_NAME, self.root / IDX_NAME
        for path in (rec_path, idx_path):
            if not path.is_file():
                raise RecordIOError(
                    f"{path}: not found; a RecordIO training set is a folder with train.rec, train.idx and property"
                )
        self.transform = transform
        self.bgr2rgb = bgr2rgb
        self.reader = RecordIOReader(rec_path, idx_path)
        self.header: tuple[int, int] | None = None
        self.image_keys = self._image_keys()
        if len(self.image_keys) == 0:
            raise RecordIOError(f"{idx_path}: the index lists no image records")
        property_path = self.root / PROPERTY_NAME
        self.image_size: tuple[int, int] | None = None
        if property_path.exists():
            self.num_classes, height, width = read_property(property_path)
            self.image_size = (height, width)
        elif self.header is not None:
            self.num_classes = self.header[1] - self.header[0]
        else:
            self.num_classes = max(self.label(i) for i in range(len(self))) + 1
        if self.num_classes <= 0:
            raise RecordIOError(f"{self.root}: the set has no classes (header {self.header})")

    def _image_keys(self) -> np.ndarray:
        keys, self.header = image_keys_of(self.reader)
        return keys

    def __len__(self) -> int:
        return len(self.image_keys)

    def _record(self, index: int) -> tuple[int, int, bytes]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        key = int(self.image_keys[index])
        _, label, image = unpack_record(self.reader.read(key), f"{self.reader.rec_path} key {key}")
        return key, label, image

    def label(self, index: int) -> int:
        """Label of item `index` without decoding its image."""
        return self._record(index)[1]

    def __getitem__(self, index: int):
        key, label, data = self._record(index)
        source = f"{self.reader.rec_path} key {key}"
        if not 0 <= label < self.num_classes:
            raise RecordIOError(f"{source}: label {label} is outside 0..{self.num_classes - 1} (num_classes from {self.root / PROPERTY_NAME})")
        image = decode_image(data, self.bgr2rgb, source=source)
        return (self.transform(image) if self.transform is not None else image), label
