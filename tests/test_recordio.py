"""insightface RecordIO: writer/reader round trips, split records, corruption, fork safety."""
from __future__ import annotations

import pickle
import struct
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grafiqs.data.recordio import (
    MAGIC,
    MAGIC_BYTES,
    RecordIODataset,
    RecordIOError,
    RecordIOReader,
    RecordIOWriter,
    encode_record,
    pack_record,
    unpack_record,
    write_recordio,
)
from grafiqs.errors import GrafiqsError, InputError

LABELS = [0] * 5 + [1] * 5 + [2] * 4 + [3] * 6


def face_like(seed: int, size: int = 112) -> np.ndarray:
    """Smooth colour gradients plus noise: compresses like a photo, differs per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    channels = [np.sin(rng.uniform(1, 6) * x + rng.uniform(1, 6) * y + rng.uniform(0, 3)) for _ in range(3)]
    image = (np.stack(channels, axis=-1) * 100 + 128 + rng.normal(0, 8, (size, size, 3))).clip(0, 255)
    return image.astype(np.uint8)


def jpeg95(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def jpeg_with_comment(image: np.ndarray, comment: bytes) -> bytes:
    """A valid JPEG whose COM segment carries `comment` (used to plant magic numbers)."""
    data = jpeg95(image)
    segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    return data[:2] + segment + data[2:]


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [face_like(seed) for seed in range(len(LABELS))]


@pytest.fixture(scope="module")
def rec_root(tmp_path_factory, images) -> Path:
    root = tmp_path_factory.mktemp("rec")
    assert write_recordio(root, zip(images, LABELS)) == 4
    return root


def copy_set(source: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("train.rec", "train.idx", "property"):
        if (source / name).exists():
            (target / name).write_bytes((source / name).read_bytes())
    return target


def index_of(root: Path) -> dict[int, int]:
    lines = (root / "train.idx").read_text().split("\n")
    return {int(k): int(v) for k, v in (line.split("\t") for line in lines if line)}


# --------------------------------------------------------------------------- round trips


def test_round_trip_rgb_and_bgr(rec_root, images):
    dataset = RecordIODataset(rec_root)
    assert len(dataset) == len(images) and dataset.num_classes == 4 and dataset.image_size == (112, 112)
    assert dataset.header == (21, 25)
    bgr_dataset = RecordIODataset(rec_root, bgr2rgb=False)
    for i, original in enumerate(images):
        expected_bgr = cv2.imdecode(np.frombuffer(jpeg95(original), np.uint8), cv2.IMREAD_COLOR)
        image, label = dataset[i]
        assert label == LABELS[i]
        assert image.dtype == np.uint8 and image.shape == (112, 112, 3)
        np.testing.assert_array_equal(image, expected_bgr[:, :, ::-1])  # RGB by default
        np.testing.assert_array_equal(bgr_dataset[i][0], expected_bgr)
        assert np.abs(expected_bgr.astype(int) - original).mean() < 8  # lossy, but close (noise sigma 8)


def test_layout_matches_insightface(rec_root):
    assert (rec_root / "property").read_text().strip() == "4,112,112"
    reader = RecordIOReader(rec_root / "train.rec", rec_root / "train.idx")
    assert reader.keys() == list(range(25))
    header, label, image = unpack_record(reader.read(0))
    assert header.flag == 2 and header.label == (21.0, 25.0) and label == 21 and image == b""
    ranges = [unpack_record(reader.read(key))[0].label for key in range(21, 25)]
    assert ranges == [(1.0, 6.0), (6.0, 11.0), (11.0, 15.0), (15.0, 21.0)]
    header, label, _ = unpack_record(reader.read(7))
    assert header.flag == 0 and label == 1 and header.id == 7


def test_transform_and_dataloader_workers(rec_root):
    dataset = RecordIODataset(rec_root, transform=lambda image: torch.from_numpy(image.copy()).permute(2, 0, 1))
    dataset[0]  # opens the file in this process; workers must reopen their own
    pickle.loads(pickle.dumps(dataset.reader)).read(3)  # spawn-style pickling works too
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=2, multiprocessing_context="fork")
    labels = torch.cat([batch_labels for _, batch_labels in loader]).tolist()
    assert labels == LABELS
    assert next(iter(loader))[0].shape == (5, 3, 112, 112)


def test_random_access_equals_streaming(rec_root):
    reader = RecordIOReader(rec_root / "train.rec", rec_root / "train.idx")
    offsets = index_of(rec_root)
    streamed = list(reader.scan())
    assert [offset for offset, _ in streamed] == sorted(offsets.values())
    by_offset = {offset: key for key, offset in offsets.items()}
    assert all(reader.read(by_offset[offset]) == payload for offset, payload in streamed)
    assert list(RecordIOReader(rec_root / "train.rec")) == [payload for _, payload in streamed]


def test_no_header_and_no_property(tmp_path, images):
    """Record 0 with flag 0 is an image: every key is an image; classes from max label + 1."""
    with RecordIOWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        for key, (image, label) in enumerate(zip(images[:6], [0, 0, 1, 2, 2, 5])):
            writer.write(pack_record(jpeg95(image), label, id=key), key=key)
    dataset = RecordIODataset(tmp_path)
    assert len(dataset) == 6 and dataset.header is None and dataset.num_classes == 6
    assert [dataset[i][1] for i in range(6)] == [0, 0, 1, 2, 2, 5]
    # labels as a flag>0 array: the first one is the class
    header, label, image = unpack_record(pack_record(b"jpg", [3.0, 9.0]))
    assert (header.flag, label, image) == (2, 3, b"jpg")


def test_missing_property_uses_header_identity_count(tmp_path, rec_root):
    root = copy_set(rec_root, tmp_path / "set")
    (root / "property").unlink()
    assert RecordIODataset(root).num_classes == 4


def test_writer_rejects_bad_samples(tmp_path, images):
    with pytest.raises(InputError, match="grouped by label"):
        write_recordio(tmp_path, [(images[0], 0), (images[1], 1), (images[2], 0)])
    with pytest.raises(InputError, match="label"):
        write_recordio(tmp_path, [(images[0], -1)])
    with pytest.raises(InputError, match="uint8"):
        write_recordio(tmp_path, [(images[0].astype(np.float32), 0)])
    with pytest.raises(InputError, match="no samples"):
        write_recordio(tmp_path, [])
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


# --------------------------------------------------------------------------- split records


def test_encode_record_splits_like_dmlc():
    payload = b"ABCD" + MAGIC_BYTES + b"EFGH" + b"xy"
    expected = (
        struct.pack("<II", MAGIC, (1 << 29) | 4) + b"ABCD"
        + struct.pack("<II", MAGIC, (3 << 29) | 6) + b"EFGHxy\x00\x00"
    )
    assert encode_record(payload) == expected
    # unaligned magic is not a split point; magic at start, end and back to back are
    assert encode_record(b"A" + MAGIC_BYTES + b"BCD") == struct.pack("<II", MAGIC, 8) + b"A" + MAGIC_BYTES + b"BCD"
    for payload in (MAGIC_BYTES, MAGIC_BYTES * 3, b"1234" + MAGIC_BYTES, MAGIC_BYTES + b"12345", b""):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "x.rec"
            path.write_bytes(encode_record(payload) + encode_record(b"next"))
            assert list(RecordIOReader(path)) == [payload, b"next"]


def test_split_image_records_round_trip(tmp_path, images):
    # IRHeader 24 bytes + SOI and COM header 6: comment byte 2 is payload offset 32 (aligned).
    # Aligned magics at 32, 36 (back to back: an empty middle part) and 44; one unaligned at 49.
    comment = b".." + MAGIC_BYTES * 2 + b"tail" + MAGIC_BYTES + b"!" + MAGIC_BYTES + b"end"
    planted = [jpeg_with_comment(images[i], comment) for i in range(3)]
    assert cv2.imdecode(np.frombuffer(planted[0], np.uint8), cv2.IMREAD_COLOR) is not None
    write_recordio(tmp_path, [(planted[0], 0), (images[3], 0), (planted[1], 1), (planted[2], 2)])
    raw = (tmp_path / "train.rec").read_bytes()
    # 8 records (header, 4 images, 3 identities); per planted image 3 extra part headers + 1 unaligned magic
    assert raw.count(MAGIC_BYTES) == 8 + 3 * 4
    flags = [struct.unpack_from("<I", raw, index + 4)[0] >> 29 for index in range(0, len(raw), 4) if raw[index:index + 4] == MAGIC_BYTES]
    assert {1, 2, 3} <= set(flags)
    dataset = RecordIODataset(tmp_path, bgr2rgb=False)
    for index, data in [(0, planted[0]), (2, planted[1]), (3, planted[2])]:
        image, _ = dataset[index]
        np.testing.assert_array_equal(image, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
        assert unpack_record(dataset.reader.read(index + 1))[2] == data
    assert [dataset[i][1] for i in range(4)] == [0, 0, 1, 2]
    reader = dataset.reader
    assert [payload for payload in reader] == [reader.read(key) for key in range(8)]


# --------------------------------------------------------------------------- corruption


def corrupt(root: Path, tmp_path: Path, edit) -> Path:
    target = copy_set(root, tmp_path / "broken")
    data = bytearray((target / "train.rec").read_bytes())
    edit(data, index_of(target))
    (target / "train.rec").write_bytes(bytes(data))
    return target


def test_bad_magic(tmp_path, rec_root):
    def edit(data, offsets):
        data[offsets[3]:offsets[3] + 4] = b"JUNK"

    root = corrupt(rec_root, tmp_path, edit)
    dataset = RecordIODataset(root)
    with pytest.raises(RecordIOError, match=r"train\.rec.*bad magic.*offset %d.*key 3" % index_of(root)[3]):
        dataset[2]
    with pytest.raises(RecordIOError, match=r"train\.rec.*bad magic"):
        list(dataset.reader)


def test_length_past_end_of_file(tmp_path, rec_root):
    def edit(data, offsets):
        struct.pack_into("<I", data, offsets[24] + 4, 10_000_000)

    root = corrupt(rec_root, tmp_path, edit)
    reader = RecordIOReader(root / "train.rec", root / "train.idx")
    with pytest.raises(RecordIOError, match=r"train\.rec.*length is 10000000 bytes, past the end"):
        reader.read(24)
    with pytest.raises(RecordIOError, match="past the end"):
        list(reader)


def test_truncated_rec_and_index_past_end(tmp_path, rec_root):
    root = copy_set(rec_root, tmp_path / "cut")
    data = (root / "train.rec").read_bytes()
    (root / "train.rec").write_bytes(data[: index_of(root)[20] + 10])
    with pytest.raises(RecordIOError, match=r"train\.idx.*line 22: offset \d+ of key 21 is past the end"):
        RecordIODataset(root)
    with pytest.raises(RecordIOError, match=r"train\.rec.*past the end"):
        list(RecordIOReader(root / "train.rec"))


def test_middle_of_split_record(tmp_path, images):
    comment = b".." + MAGIC_BYTES + b"."
    write_recordio(tmp_path, [(jpeg_with_comment(images[0], comment), 0)])
    raw = (tmp_path / "train.rec").read_bytes()
    offsets = index_of(tmp_path)
    second_part = raw.index(MAGIC_BYTES, offsets[1] + 8 + 4)
    while struct.unpack_from("<I", raw, second_part + 4)[0] >> 29 != 3:
        second_part = raw.index(MAGIC_BYTES, second_part + 4)
    reader = RecordIOReader(tmp_path / "train.rec", tmp_path / "train.idx")
    with pytest.raises(RecordIOError, match=r"train\.rec.*middle of a split record"):
        reader.read_at(second_part)


@pytest.mark.parametrize(
    "text, message",
    [
        ("0\t0\n1\tabc\n", r"train\.idx: line 2 is '1\\tabc'"),
        ("0\t0\n1\n", r"train\.idx: line 2"),
        ("0\t0\n0\t0\n", r"train\.idx: key 0 appears more than once"),
        ("0\t-8\n", r"train\.idx: line 1 has a negative"),
    ],
)
def test_bad_index(tmp_path, rec_root, text, message):
    root = copy_set(rec_root, tmp_path / "set")
    (root / "train.idx").write_text(text)
    with pytest.raises(RecordIOError, match=message):
        RecordIODataset(root)


def test_missing_files_and_bad_property(tmp_path, rec_root):
    root = copy_set(rec_root, tmp_path / "set")
    (root / "property").write_text("lots,112\n")
    with pytest.raises(RecordIOError, match=r"property: content 'lots,112' is not 'num_classes,height,width'"):
        RecordIODataset(root)
    (root / "train.idx").unlink()
    with pytest.raises(RecordIOError, match=r"train\.idx: not found"):
        RecordIODataset(root)
    with pytest.raises(RecordIOError, match="not found"):
        RecordIOReader(tmp_path / "nothing.rec")
    with pytest.raises(RecordIOError, match=r"key 99 is not in the index"):
        RecordIOReader(rec_root / "train.rec", rec_root / "train.idx").read(99)


def test_bad_irheader(tmp_path, images):
    with RecordIOWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        writer.write(pack_record(jpeg95(images[0]), 0), key=0)
        writer.write(b"short", key=1)
        writer.write(struct.pack("<IfQQ", 1000, 0.0, 2, 0) + b"1234", key=2)
        writer.write(struct.pack("<IfQQ", 0, float("nan"), 3, 0) + b"1234", key=3)
        writer.write(pack_record(jpeg95(images[1]), 7), key=4)
    (tmp_path / "property").write_text("2,112,112")
    dataset = RecordIODataset(tmp_path)
    assert dataset[0][1] == 0
    with pytest.raises(RecordIOError, match=r"train\.rec key 1: payload is 5 bytes, shorter than the 24-byte IRHeader"):
        dataset[1]
    with pytest.raises(RecordIOError, match=r"train\.rec key 2: IRHeader flag says 1000 labels"):
        dataset[2]
    with pytest.raises(RecordIOError, match=r"train\.rec key 3: IRHeader label nan"):
        dataset[3]
    with pytest.raises(RecordIOError, match=r"train\.rec key 4: label 7 is outside 0\.\.1"):
        dataset[4]


def test_undecodable_image_is_image_error(tmp_path):
    with RecordIOWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        writer.write(pack_record(b"not a jpeg", 0), key=0)
    with pytest.raises(GrafiqsError, match=r"train\.rec key 0: not a decodable image"):
        RecordIODataset(tmp_path)[0]


# --------------------------------------------------------------------------- fuzzing


def small_valid_set() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as folder:
        tiny = [face_like(seed, 16) for seed in range(3)]
        write_recordio(folder, [(tiny[0], 0), (tiny[1], 1), (tiny[2], 1)])
        return {name: (Path(folder) / name).read_bytes() for name in ("train.rec", "train.idx", "property")}


VALID = small_valid_set()


def exercise(files: dict[str, bytes]) -> None:
    """Everything a user can do with the files; only project errors may come out."""
    with tempfile.TemporaryDirectory() as folder:
        for name, data in files.items():
            (Path(folder) / name).write_bytes(data)
        try:
            list(RecordIOReader(Path(folder) / "train.rec"))
        except GrafiqsError:
            pass
        try:
            reader = RecordIOReader(Path(folder) / "train.rec", Path(folder) / "train.idx")
            for key in reader.keys():
                try:
                    unpack_record(reader.read(key))
                except GrafiqsError:
                    pass
        except GrafiqsError:
            pass
        try:
            dataset = RecordIODataset(folder)
            for index in range(len(dataset)):
                try:
                    dataset[index]
                except GrafiqsError:
                    pass
        except GrafiqsError:
            pass


fuzz = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(st.binary(max_size=200))
def test_fuzz_unpack_record(payload):
    try:
        unpack_record(payload)
    except GrafiqsError:
        pass


@fuzz
@given(st.sampled_from(["train.rec", "train.idx", "property"]), st.data())
def test_fuzz_mutated_files(name, data):
    original = VALID[name]
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
        position = data.draw(st.integers(0, max(len(mutated) - 1, 0)))
        if action == "flip" and mutated:
            mutated[position] = data.draw(st.integers(0, 255))
        elif action == "truncate":
            del mutated[position:]
        else:
            mutated[position:position] = data.draw(st.binary(min_size=1, max_size=8))
    exercise({**VALID, name: bytes(mutated)})


@fuzz
@given(st.binary(max_size=300), st.binary(max_size=60))
def test_fuzz_random_files(rec, idx):
    exercise({"train.rec": rec, "train.idx": idx})
    exercise({"train.rec": MAGIC_BYTES + rec, "train.idx": b"0\t0\n" + idx})
