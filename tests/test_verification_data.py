"""Verification pair sets: .bin pickles (restricted unpickling), LFW pairs.txt, CR-FIQA pair_list.txt."""
from __future__ import annotations

import io
import os
import pickle
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grafiqs.data.verification import (
    UnsafePickleError,
    VerificationDataError,
    VerificationImages,
    VerificationSet,
    load_bin_pairs,
    load_lfw_pairs,
    load_pair_list,
    write_bin_pairs,
)
from grafiqs.errors import GrafiqsError, ImageError


def encoded(seed: int, size: int = 112) -> bytes:
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (7, 7), 0)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


IMAGES = [encoded(seed) for seed in range(8)]
ISSAME = [True, False, True, False]


# --------------------------------------------------------------------------- .bin


def test_bin_round_trip(tmp_path):
    path = tmp_path / "lfw.bin"
    write_bin_pairs(path, IMAGES, ISSAME)
    vset = load_bin_pairs(path)
    assert vset.source == str(path) and len(vset) == 4 and vset.num_images == 8 and vset.paths is None
    assert vset.images == IMAGES and [vset.read(i) for i in range(8)] == IMAGES
    assert vset.pairs.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert vset.issame.dtype == bool and vset.issame.tolist() == ISSAME
    assert vset.names[:2] == ["000000", "000001"]


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize(
    "variant",
    ["lists", "numpy_bool_flags", "object_array_images", "bytes_array_images", "numpy_bool_items", "uint8_array_images"],
)
def test_bin_layouts_of_real_files(tmp_path, protocol, variant):
    """The container types real .bin files use all load through the allow-list."""
    bins, issame = list(IMAGES), list(ISSAME)
    if variant == "numpy_bool_flags":
        issame = np.asarray(issame)
    elif variant == "object_array_images":
        bins = np.asarray(bins + [b""], dtype=object)[:-1]
    elif variant == "bytes_array_images":
        bins = np.asarray(bins)  # fixed-width 'S': JPEGs end in FFD9, so no trailing NUL is lost
    elif variant == "numpy_bool_items":
        issame = [np.bool_(flag) for flag in issame]
    elif variant == "uint8_array_images":
        bins = [np.frombuffer(data, np.uint8) for data in bins]
    path = tmp_path / "set.bin"
    path.write_bytes(pickle.dumps((bins, issame), protocol=protocol))
    vset = load_bin_pairs(path)
    assert vset.images == IMAGES and vset.issame.tolist() == ISSAME


def test_python2_style_bin(tmp_path):
    """Python 2 str pickles (BINSTRING) come back as bytes with encoding='bytes'."""
    stream = io.BytesIO()
    stream.write(b"\x80\x02(]q\x00(")
    for data in IMAGES[:2]:
        stream.write(b"T" + len(data).to_bytes(4, "little") + data)
    stream.write(b"e]q\x01\x88a" + b"t.")
    path = tmp_path / "py2.bin"
    path.write_bytes(stream.getvalue())
    vset = load_bin_pairs(path)
    assert vset.images == IMAGES[:2] and vset.issame.tolist() == [True]


class Payload:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_hostile_pickle_does_not_run(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([Payload(target), IMAGES[0]], [True]), protocol=2))
    with pytest.raises(UnsafePickleError, match=r"evil\.bin: refused to load global '(posix|os|nt)\.system'"):
        load_bin_pairs(path)
    assert not target.exists()


@pytest.mark.parametrize(
    "module, name",
    [("builtins", "eval"), ("subprocess", "Popen"), ("builtins", "getattr"), ("numpy", "load"), ("pickle", "loads")],
)
def test_refused_globals(tmp_path, module, name):
    path = tmp_path / "hostile.bin"
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x04\x00\x00\x00argsq\x00\x85R.")
    with pytest.raises(UnsafePickleError, match=rf"hostile\.bin: refused to load global '{module}\.{name}'"):
        load_bin_pairs(path)


def test_restricted_helpers_refuse_other_uses(tmp_path):
    path = tmp_path / "codec.bin"
    # _codecs.encode('x', 'rot13'): allowed name, refused codec
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(VerificationDataError, match=r"codec\.bin: .*rot13"):
        load_bin_pairs(path)
    # bytes(10**12): would allocate a terabyte
    path.write_bytes(b"\x80\x02c__builtin__\nbytes\n\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85R.")
    with pytest.raises(VerificationDataError, match=r"codec\.bin"):
        load_bin_pairs(path)


def test_memo_bomb_is_refused_before_unpickling(tmp_path):
    path = tmp_path / "bomb.bin"
    path.write_bytes(b"\x80\x02]r\xff\xff\xff\x7f.")  # LONG_BINPUT 2**31-1: CPython would zero 32 GB
    with pytest.raises(VerificationDataError, match=r"bomb\.bin: not a readable \.bin.*memo index"):
        load_bin_pairs(path)


@pytest.mark.parametrize(
    "obj, message",
    [
        ([IMAGES[:2], [True], "extra"], "list of 3 items, expected"),
        ({"bins": 1}, "holds a dict"),
        ((IMAGES[:3], [True]), "3 images for 1 pairs"),
        ((IMAGES[:2] + [5, 6], [True, False]), "image 2 is a int"),
        ((IMAGES[:2], ["yes"]), "genuine flag 0 is 'yes'"),
        (([], []), "no pairs"),
        ((b"abc", [True]), "images are a bytes"),
    ],
)
def test_bin_structure_errors(tmp_path, obj, message):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(VerificationDataError, match=rf"bad\.bin: .*{message}"):
        load_bin_pairs(path)


def test_bin_not_found_or_not_pickle(tmp_path):
    with pytest.raises(VerificationDataError, match=r"none\.bin: \.bin pair file not found"):
        load_bin_pairs(tmp_path / "none.bin")
    (tmp_path / "text.bin").write_text("hello")
    with pytest.raises(VerificationDataError, match=r"text\.bin: not a readable \.bin"):
        load_bin_pairs(tmp_path / "text.bin")


def test_write_bin_validates(tmp_path):
    with pytest.raises(VerificationDataError, match="3 images for 1 pairs"):
        write_bin_pairs(tmp_path / "x.bin", IMAGES[:3], [True])
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- LFW pairs.txt


def make_lfw(root: Path, people: dict[str, int]) -> None:
    seed = 100
    for name, count in people.items():
        (root / name).mkdir(parents=True)
        for number in range(1, count + 1):
            (root / name / f"{name}_{number:04d}.jpg").write_bytes(encoded(seed, 64))
            seed += 1


def test_lfw_pairs(tmp_path):
    make_lfw(tmp_path / "lfw", {"Ann_A": 3, "Bob_B": 2, "Cy_C": 1})
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(
        "2\t1\n"
        "Ann_A\t1\t2\n"
        "Ann_A\t1\tBob_B\t2\n"
        "\n"
        "Bob_B\t1\t2\n"
        "Cy_C\t1\tAnn_A\t3\n"
    )
    vset = load_lfw_pairs(pairs, tmp_path / "lfw")
    assert vset.folds == 2 and len(vset) == 4 and vset.issame.tolist() == [True, False, True, False]
    assert vset.names == [
        "Ann_A/Ann_A_0001.jpg", "Ann_A/Ann_A_0002.jpg", "Bob_B/Bob_B_0002.jpg",
        "Bob_B/Bob_B_0001.jpg", "Cy_C/Cy_C_0001.jpg", "Ann_A/Ann_A_0003.jpg",
    ]
    assert vset.pairs.tolist() == [[0, 1], [0, 2], [3, 2], [4, 5]]  # Ann_A_0001 appears once
    assert vset.paths == [os.path.join(str(tmp_path / "lfw"), name) for name in vset.names]
    assert vset.read(0) == (tmp_path / "lfw" / "Ann_A" / "Ann_A_0001.jpg").read_bytes()
    # single count header: n genuine + n impostor, one fold
    pairs.write_text("1\nAnn_A 1 3\nCy_C 1 Bob_B 1\n")
    vset = load_lfw_pairs(pairs, tmp_path / "lfw", extension=".jpg")
    assert vset.folds == 1 and vset.issame.tolist() == [True, False]


def test_lfw_missing_images_reported(tmp_path):
    make_lfw(tmp_path / "lfw", {"Ann_A": 2})
    pairs = tmp_path / "pairs.txt"
    lines = ["1\t4", "Ann_A\t1\t2", "Ann_A\t1\t9", "Zed\t1\t2", "Zed\t3\t4"]
    lines += ["Ann_A\t1\tX\t1", "Ann_A\t2\tY\t1", "Ann_A\t1\tZ\t1", "Ann_A\t2\tZ\t1"]
    pairs.write_text("\n".join(lines) + "\n")
    with pytest.raises(VerificationDataError) as error:
        load_lfw_pairs(pairs, tmp_path / "lfw")
    message = str(error.value)
    assert "pairs.txt: 8 image(s) named in the list are missing" in message
    assert "line 3: " in message and "Ann_A_0009.jpg" in message and "line 4: " in message and "Zed_0001.jpg" in message
    assert "and 3 more" in message and "Z_0001.jpg" not in message


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("Ann_A 1 2\n", "line 1 is 'Ann_A 1 2', expected the header"),
        ("1 1\nAnn_A 1 2\n", r"header says 1 fold.*\(2 lines\), but 1 pair lines follow"),
        ("1 1\nAnn_A 1 2\nAnn_A 1 B\n", "line 3: image number 'B'"),
        ("1 1\nAnn_A 1 2\nAnn_A 1 B 2 7\n", "line 3 has 5 fields"),
    ],
)
def test_lfw_malformed(tmp_path, text, message):
    make_lfw(tmp_path / "lfw", {"Ann_A": 2})
    (tmp_path / "pairs.txt").write_text(text)
    with pytest.raises(VerificationDataError, match=rf"pairs\.txt: .*{message}"):
        load_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")


# --------------------------------------------------------------------------- CR-FIQA pair_list.txt


def make_pair_list_set(root: Path, lines: str, names: list[str]) -> Path:
    (root / "images").mkdir(parents=True)
    for seed, name in enumerate(names):
        (root / "images" / name).write_bytes(encoded(seed, 112))
    (root / "pair_list.txt").write_text(lines)
    return root


def test_pair_list(tmp_path):
    root = make_pair_list_set(tmp_path / "XQLFW", "a.jpg b.jpg 1\na.jpg c.jpg 0\n\nc.jpg b.jpg 0\n", ["a.jpg", "b.jpg", "c.jpg"])
    vset = load_pair_list(root)
    assert vset.names == ["a.jpg", "b.jpg", "c.jpg"] and vset.folds is None
    assert vset.pairs.tolist() == [[0, 1], [0, 2], [2, 1]] and vset.issame.tolist() == [True, False, False]
    assert vset.source == str(root / "pair_list.txt")


def test_pair_list_errors(tmp_path):
    root = make_pair_list_set(tmp_path / "set", "a.jpg b.jpg 1\na.jpg gone.jpg 0\n", ["a.jpg", "b.jpg"])
    with pytest.raises(VerificationDataError, match=r"pair_list\.txt: 1 image\(s\) named in the list are missing: line 2: .*gone\.jpg"):
        load_pair_list(root)
    (root / "pair_list.txt").write_text("a.jpg b.jpg yes\n")
    with pytest.raises(VerificationDataError, match=r"pair_list\.txt: line 1 is 'a.jpg b.jpg yes'"):
        load_pair_list(root)
    (root / "pair_list.txt").write_text("\n")
    with pytest.raises(VerificationDataError, match=r"pair_list\.txt: no pairs"):
        load_pair_list(root)
    with pytest.raises(VerificationDataError, match=r"images: image folder not found"):
        load_pair_list(tmp_path / "nowhere")


# --------------------------------------------------------------------------- decoding dataset


def test_verification_images(tmp_path):
    write_bin_pairs(tmp_path / "s.bin", IMAGES, ISSAME)
    vset = load_bin_pairs(tmp_path / "s.bin")
    dataset = VerificationImages(vset)
    assert len(dataset) == 8
    index, tensor = dataset[3]
    expected = cv2.imdecode(np.frombuffer(IMAGES[3], np.uint8), cv2.IMREAD_COLOR)
    assert index == 3 and tensor.dtype == torch.uint8 and tensor.shape == (3, 112, 112)
    assert torch.equal(tensor, torch.from_numpy(expected).permute(2, 0, 1))
    assert torch.equal(VerificationImages(vset, bgr2rgb=True)[3][1], tensor.flip(0))
    # path-based sets resize to 112 and name the file when it cannot be decoded
    root = make_pair_list_set(tmp_path / "set", "a.jpg b.jpg 1\n", ["a.jpg", "b.jpg"])
    (root / "images" / "b.jpg").write_bytes(encoded(5, 64))
    vset = load_pair_list(root)
    assert VerificationImages(vset)[1][1].shape == (3, 112, 112)
    (root / "images" / "b.jpg").write_bytes(b"garbage")
    with pytest.raises(ImageError, match=r"b\.jpg: not a decodable image"):
        VerificationImages(vset)[1]
    (root / "images" / "b.jpg").unlink()
    with pytest.raises(ImageError, match=r"b\.jpg: cannot be read"):
        VerificationImages(vset)[1]


def test_set_validates_itself():
    with pytest.raises(VerificationDataError, match="pair indices outside"):
        VerificationSet("x", [b"a", b"b"], np.array([[0, 2]]), np.array([True]), ["0", "1"])
    with pytest.raises(VerificationDataError, match="mix file paths and encoded bytes"):
        VerificationSet("x", [b"a", "b.jpg"], np.array([[0, 1]]), np.array([True]), ["0", "1"])


# --------------------------------------------------------------------------- fuzzing


def valid_bin(protocol: int) -> bytes:
    return pickle.dumps(([data[:40] for data in IMAGES[:4]], np.asarray([True, False])), protocol=protocol)


VALID_BINS = [valid_bin(2), valid_bin(5)]


def load_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.bin"
        path.write_bytes(data)
        try:
            load_bin_pairs(path)
        except GrafiqsError as error:
            assert "fuzz.bin" in str(error)


fuzz = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(st.binary(max_size=300))
def test_fuzz_random_bin(data):
    load_bytes(data)
    load_bytes(b"\x80\x02" + data)


@fuzz
@given(st.sampled_from(VALID_BINS), st.data())
def test_fuzz_mutated_bin(original, data):
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1)) if mutated else 0
        action = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
        if action == "flip" and mutated:
            mutated[position] = data.draw(st.integers(0, 255))
        elif action == "truncate":
            del mutated[position:]
        else:
            mutated[position:position] = data.draw(st.binary(min_size=1, max_size=8))
    load_bytes(bytes(mutated))
