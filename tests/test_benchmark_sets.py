"""Benchmark evaluation sets: XQLFW pairs, all-vs-all identity folders, the IJB-C 1:1 template protocol."""
from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pytest

from grafiqs.data import ijbc
from grafiqs.data.ijbc import (
    IJBCDataError, IJBCProtocol, ijbc_images, load_ijbc_protocol, read_face_tid_mid, read_template_pair_label,
    synthetic_ijbc,
)
from grafiqs.data.verification import VerificationDataError, identity_folder_pairs, load_xqlfw_pairs
from grafiqs.evaluation.edc import edc

# --------------------------------------------------------------------------- XQLFW


def make_people(root, people: dict[str, int]) -> None:
    for name, count in people.items():
        (root / name).mkdir(parents=True)
        for i in range(1, count + 1):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(b"jpeg")


def test_xqlfw_pairs_skip_header_and_read_both_kinds(tmp_path):
    make_people(tmp_path / "xqlfw_aligned_112", {"Ann_A": 2, "Bob_B": 1})
    (tmp_path / "xqlfw_pairs.txt").write_text("6000 3000 header\nAnn_A 1 2\n\nAnn_A 2 Bob_B 1\n")
    vset = load_xqlfw_pairs(tmp_path / "xqlfw_pairs.txt", tmp_path / "xqlfw_aligned_112")
    assert vset.names == ["Ann_A/Ann_A_0001.jpg", "Ann_A/Ann_A_0002.jpg", "Bob_B/Bob_B_0001.jpg"]
    assert vset.pairs.tolist() == [[0, 1], [1, 2]]
    assert vset.issame.tolist() == [True, False]
    assert vset.folds is None
    assert vset.paths[2] == os.path.join(str(tmp_path / "xqlfw_aligned_112"), "Bob_B/Bob_B_0001.jpg")


@pytest.mark.parametrize("text, message", [
    ("header\nAnn_A 1\n", "line 2 has 2 fields"),
    ("header\nAnn_A 1 2\nAnn_A x Bob_B 1\n", "line 3: image number 'x'"),
    ("header\nAnn_A 1 3\n", "line 2: "),  # Ann_A_0003.jpg does not exist
    ("header\n\n", "no pair lines after the header"),
])
def test_xqlfw_errors_name_file_and_line(tmp_path, text, message):
    make_people(tmp_path / "img", {"Ann_A": 2, "Bob_B": 1})
    (tmp_path / "xqlfw_pairs.txt").write_text(text)
    with pytest.raises(VerificationDataError, match=message) as error:
        load_xqlfw_pairs(tmp_path / "xqlfw_pairs.txt", tmp_path / "img")
    assert "xqlfw_pairs.txt" in str(error.value)


# --------------------------------------------------------------------------- all-vs-all


def make_identity_folder(root, counts: dict[str, int]) -> None:
    for identity, count in counts.items():
        (root / identity).mkdir(parents=True)
        for i in range(count):
            (root / identity / f"{i}.jpg").write_bytes(b"jpeg")


def test_identity_folder_all_pairs(tmp_path):
    make_identity_folder(tmp_path, {"b": 3, "a": 2, "c": 1, "empty": 0})
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    vset = identity_folder_pairs(tmp_path)
    assert vset.names == ["a/0.jpg", "a/1.jpg", "b/0.jpg", "b/1.jpg", "b/2.jpg", "c/0.jpg"]
    assert len(vset) == 6 * 5 // 2
    expected = {(i, j): vset.names[i][0] == vset.names[j][0] for i, j in itertools.combinations(range(6), 2)}
    assert {tuple(pair): bool(same) for pair, same in zip(vset.pairs.tolist(), vset.issame)} == expected
    assert vset.issame.sum() == 1 + 3


def test_identity_folder_refusals(tmp_path):
    make_identity_folder(tmp_path / "set", {"a": 3, "b": 2})
    with pytest.raises(VerificationDataError, match=r"10 all-vs-all pairs, more than max_pairs=9"):
        identity_folder_pairs(tmp_path / "set", max_pairs=9)
    assert len(identity_folder_pairs(tmp_path / "set", max_pairs=10)) == 10
    (tmp_path / "set" / "loose.jpg").write_bytes(b"jpeg")
    with pytest.raises(VerificationDataError, match="no identity"):
        identity_folder_pairs(tmp_path / "set")
    make_identity_folder(tmp_path / "one", {"a": 1})
    with pytest.raises(VerificationDataError, match="at least 2"):
        identity_folder_pairs(tmp_path / "one")
    with pytest.raises(VerificationDataError, match="not found"):
        identity_folder_pairs(tmp_path / "missing")


# --------------------------------------------------------------------------- IJB-C readers

FACES = "1.jpg 1 10\n2.jpg 1 10\n3.jpg 1 11\n\n4.jpg 2 11\n5.jpg 2 12\n6.jpg 3 13\n7.jpg 4 14\n"
PAIRS = "1 2 1\n1 3 0\n2 3 0\n\n3 4 1\n4 1 0\n"


@pytest.fixture
def meta(tmp_path):
    (tmp_path / "ijbc_face_tid_mid.txt").write_text(FACES)
    (tmp_path / "ijbc_template_pair_label.txt").write_text(PAIRS)
    return tmp_path


def test_ijbc_readers(meta):
    names, templates, media = read_face_tid_mid(meta / "ijbc_face_tid_mid.txt")
    assert names == [f"{i}.jpg" for i in range(1, 8)]
    assert templates.tolist() == [1, 1, 1, 2, 2, 3, 4] and media.tolist() == [10, 10, 11, 11, 12, 13, 14]
    pairs, labels = read_template_pair_label(meta / "ijbc_template_pair_label.txt")
    assert pairs.tolist() == [[1, 2], [1, 3], [2, 3], [3, 4], [4, 1]]
    assert labels.tolist() == [True, False, False, True, False]
    protocol = load_ijbc_protocol(meta)
    assert protocol.templates.tolist() == [1, 2, 3, 4] and protocol.pair_rows.tolist()[-1] == [3, 0]


def test_ijbc_readers_across_chunks(meta, monkeypatch):
    monkeypatch.setattr(ijbc, "CHUNK_BYTES", 5)  # a chunk per line or two: line numbers carry over
    assert read_face_tid_mid(meta / "ijbc_face_tid_mid.txt")[0] == [f"{i}.jpg" for i in range(1, 8)]
    (meta / "bad.txt").write_text(PAIRS + "5 x 0\n")
    with pytest.raises(IJBCDataError, match=r"bad.txt: line 7: template_b 'x' is not an integer"):
        read_template_pair_label(meta / "bad.txt")


@pytest.mark.parametrize("reader, text, message", [
    (read_face_tid_mid, "1.jpg 1 10\n2.jpg 1\n", "line 2 has 2 fields, expected `image_name template_id media_id`"),
    (read_face_tid_mid, "1.jpg 1 10\n\n2.jpg 1.5 10\n", "line 3: template_id '1.5' is not an integer"),
    (read_face_tid_mid, "1.jpg 1 10\n2.jpg 1 10 7\n", "line 2 has 4 fields"),
    (read_template_pair_label, "1 2 1\n\n1 3 2\n", "line 3: label 2 is neither 1"),
    (read_template_pair_label, "1 2 1\n1 2 one\n", "line 2: label 'one' is not an integer"),
    (read_template_pair_label, "\n\n", "holds no lines"),
])
def test_ijbc_malformed_lines(tmp_path, reader, text, message):
    (tmp_path / "protocol.txt").write_text(text)
    with pytest.raises(IJBCDataError, match=message) as error:
        reader(tmp_path / "protocol.txt")
    assert "protocol.txt" in str(error.value)


def test_ijbc_non_utf8_name_and_missing_file(tmp_path):
    (tmp_path / "faces.txt").write_bytes(b"1.jpg 1 10\n\xff.jpg 1 10\n")
    with pytest.raises(IJBCDataError, match="line 2: image_name is not UTF-8"):
        read_face_tid_mid(tmp_path / "faces.txt")
    with pytest.raises(IJBCDataError, match="not found"):
        read_face_tid_mid(tmp_path / "absent.txt")


def test_ijbc_unknown_template_in_pairs(meta):
    names, templates, media = read_face_tid_mid(meta / "ijbc_face_tid_mid.txt")
    with pytest.raises(IJBCDataError, match="template pair 2 .* names template 9, which no image belongs to"):
        IJBCProtocol(names, templates, media, [[1, 2], [9, 1], [3, 99]], [1, 0, 0])


def test_ijbc_images(meta):
    protocol = load_ijbc_protocol(meta)
    (meta / "loose_crop").mkdir()
    for name in protocol.names[:-1]:
        (meta / "loose_crop" / name).write_bytes(b"jpeg")
    with pytest.raises(IJBCDataError, match="1 of 7 protocol images are missing, e.g. .*7.jpg"):
        ijbc_images(protocol, meta / "loose_crop")
    (meta / "loose_crop" / "7.jpg").write_bytes(b"jpeg")
    assert ijbc_images(protocol, meta / "loose_crop") == [str(meta / "loose_crop" / n) for n in protocol.names]


# --------------------------------------------------------------------------- templates and pairs


def loop_template_embeddings(protocol: IJBCProtocol, embeddings: np.ndarray) -> dict[int, np.ndarray]:
    """The oracle: insightface's per-template loop, in plain Python."""
    result = {}
    for template in sorted(set(protocol.template_ids.tolist())):
        media = {}
        for i, (t, m) in enumerate(zip(protocol.template_ids.tolist(), protocol.media_ids.tolist())):
            if t == template:
                media.setdefault(m, []).append(embeddings[i].astype(np.float64))
        total = sum(np.mean(images, axis=0) for images in media.values())
        result[template] = total / np.linalg.norm(total)
    return result


def test_template_embeddings_equal_loop(meta):
    protocol = load_ijbc_protocol(meta)  # media 11 lies in templates 1 and 2: grouped per template
    embeddings = np.random.default_rng(0).normal(size=(7, 16)).astype(np.float32)
    ids, features = protocol.template_embeddings(embeddings)
    oracle = loop_template_embeddings(protocol, embeddings)
    assert ids.tolist() == sorted(oracle)
    np.testing.assert_allclose(features, np.stack([oracle[t] for t in ids.tolist()]), rtol=1e-5, atol=1e-6)
    with pytest.raises(IJBCDataError, match="one row per protocol image"):
        protocol.template_embeddings(embeddings[:6])


def test_template_and_pair_quality_take_the_worst(meta):
    protocol = load_ijbc_protocol(meta)
    raw = np.array([0.9, 0.2, 0.5, 0.7, 0.4, 0.6, 0.3])  # templates: [0.9 0.2 0.5], [0.7 0.4], [0.6], [0.3]
    higher = protocol.template_quality(raw, "higher_is_better")
    assert higher.tolist() == [0.2, 0.4, 0.6, 0.3]
    lower = protocol.template_quality(raw, "lower_is_better")  # larger magnitude = worse
    assert lower.tolist() == [-0.9, -0.7, -0.6, -0.3]
    # pairs (1,2) (1,3) (2,3) (3,4) (4,1)
    assert protocol.pair_quality(higher).tolist() == [0.2, 0.2, 0.4, 0.3, 0.2]
    assert protocol.pair_quality(lower).tolist() == [-0.9, -0.9, -0.7, -0.6, -0.9]


def test_pair_similarity_blocks_equal_direct(tmp_path):
    synthetic_ijbc(tmp_path, num_images=300, num_templates=40, num_pairs=2000, seed=1)
    protocol = load_ijbc_protocol(tmp_path)
    features = np.random.default_rng(2).normal(size=(40, 8)) * 3  # not normalised: cosine must normalise
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    direct = np.einsum("ij,ij->i", unit[protocol.pair_rows[:, 0]], unit[protocol.pair_rows[:, 1]])
    for block in (1, 7, 40, 1024):
        np.testing.assert_allclose(protocol.pair_similarity(features, block_templates=block), direct, atol=1e-6)


def test_edc_on_template_pairs_matches_hand_computation():
    # four templates, one image each; embeddings at known angles give known cosines
    angles = np.radians([0.0, 10.0, 60.0, 100.0])
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    pairs = [[1, 2], [1, 3], [2, 3], [3, 4], [1, 4], [2, 4]]
    labels = [1, 1, 0, 1, 0, 0]
    protocol = IJBCProtocol(["a", "b", "c", "d"], [1, 2, 3, 4], [1, 2, 3, 4], pairs, labels)
    quality = np.array([0.9, 0.5, 0.7, 0.2])
    similarity = protocol.pair_similarity(protocol.template_embeddings(embeddings)[1])
    pair_q = protocol.pair_quality(protocol.template_quality(quality))
    result = edc(similarity, protocol.labels, pair_q, fmr=0.0)

    # by hand: impostor cosines cos50, cos100, cos90 -> threshold cos50 (FMR 0 needs score > t);
    # genuine (1,2) cos10 and (3,4) cos40 accepted, (1,3) cos60 rejected; pair qualities 0.5, 0.7, 0.2
    assert math.isclose(result.threshold, math.cos(math.radians(50)), rel_tol=1e-6)
    # discard by quality: none -> 1/3 errors; drop (3,4) q=0.2 -> 1/2; drop (1,2) q=0.5 -> 1/1; all -> 0
    np.testing.assert_allclose(result.discard, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(result.fnmr, [1 / 3, 1 / 2, 1, 0])
    assert math.isclose(result.pauc(0.3).raw, 0.3 * 1 / 3)  # left steps: 1/3 holds until discard 1/3 > 0.3


def test_synthetic_ijbc_structure(tmp_path):
    _, pairs_file = synthetic_ijbc(tmp_path, num_images=4000, num_templates=200, num_pairs=40000, seed=0)
    protocol = load_ijbc_protocol(tmp_path)
    assert protocol.num_images == 4000 and len(protocol.templates) == 200 and len(protocol.labels) == 40000
    assert protocol.labels.sum() == 200
    media_per_template = [len(set(protocol.media_ids[protocol.template_ids == t])) for t in protocol.templates]
    assert min(media_per_template) >= 1 and np.mean(media_per_template) > 1.5
    images_per_media = np.unique(np.stack([protocol.template_ids, protocol.media_ids], 1), axis=0, return_counts=True)[1]
    assert images_per_media.mean() > 2
    assert (protocol.pairs[:, 0] != protocol.pairs[:, 1]).all()
    assert synthetic_ijbc(tmp_path / "again", 4000, 200, 40000, seed=0)[1].read_bytes() == pairs_file.read_bytes()
