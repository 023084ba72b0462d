"""Hardening: numerics, --strict, full disk / read-only output, symlink loops, fuzzed image and pair-list parsers."""
import errno
import json
import math
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FACES, tiny_iresnet
from grafiqs.data.decode import decode_image
from grafiqs.data.folders import list_images
from grafiqs.io.score_files import read_score_file
from grafiqs.data.verification import load_lfw_pairs, load_pair_list
from grafiqs.errors import GrafiqsError, ImageError, InputError
from grafiqs.io.ledger import LOG_FOLDER
from grafiqs.lit import writers
from grafiqs.models.iresnet import IResNet
from grafiqs.quality.bn_stats import UntrainedStatisticsWarning
from grafiqs.quality.scorer import STATUS_INPUT, STATUS_LOSS, STATUS_MESSAGES, STATUS_OK, GraFIQsScorer
from test_score_cli import read_csv, score

fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------- numerics


def test_nan_input_gets_nan_scores_and_a_status_without_touching_its_batch_neighbours():
    scorer = GraFIQsScorer(tiny_iresnet())
    images = torch.rand(3, 3, 112, 112) * 2 - 1
    poisoned = images.clone()
    poisoned[1, 0, 5, 5] = float("nan")
    result = scorer(poisoned)
    assert result.status.tolist() == [STATUS_OK, STATUS_INPUT, STATUS_OK]
    for group, values in result.scores.items():
        assert math.isnan(values[1])
        alone = scorer(images[[0, 2]]).scores[group]
        torch.testing.assert_close(values[[0, 2]], alone, rtol=1e-5, atol=0)


def test_broken_weights_give_nan_scores_with_a_status_column(tmp_path, faces, capsys):
    model = tiny_iresnet()
    model.layer2[0].bn1.running_var[3] = float("inf")  # a corrupted statistic
    model.layer1[0].conv1.weight.data[0, 0, 0, 0] = float("nan")
    torch.save(model.state_dict(), tmp_path / "broken.pth")
    assert score(faces, tmp_path / "out", tmp_path / "broken.pth") == 5  # no usable score at all
    rows = read_csv(tmp_path / "out" / "scores.csv")
    assert len(rows) == len(FACES)
    assert all(r["status"] == STATUS_MESSAGES[STATUS_LOSS] and r["image"] == "nan" for r in rows)
    assert all(math.isnan(v) for v in read_score_file(tmp_path / "out" / "GraFIQs_image.txt").values())
    err = capsys.readouterr().err
    assert f"{len(FACES)} images got NaN scores" in err and "0 usable scores" in err


def test_fresh_batchnorm_statistics_warn_that_grafiqs_is_meaningless(tmp_path, faces):
    with pytest.warns(UntrainedStatisticsWarning, match="meaningless"):
        GraFIQsScorer(IResNet((1, 1, 1, 1), 16, widths=(8, 8, 8, 8)))
    torch.save(IResNet((1, 1, 1, 1), 16, widths=(8, 8, 8, 8)).state_dict(), tmp_path / "fresh.pth")
    with pytest.warns(UntrainedStatisticsWarning):
        assert score(faces, tmp_path / "out", tmp_path / "fresh.pth") == 0


# ------------------------------------------------------------------------------------- files


def test_strict_stops_at_the_first_bad_file_and_a_normal_rerun_resumes(tmp_path, tiny_weights, faces, capsys):
    (faces / "zz_text.png").write_text("not an image")
    assert score(faces, tmp_path / "out", tiny_weights, "--strict", "--batch-size", 2) == 3
    err = capsys.readouterr().err
    assert "--strict" in err and "zz_text.png" in err and "rerun without --strict" in err
    assert not (tmp_path / "out" / "GraFIQs_image.txt").exists()
    logged = [json.loads(line) for log in (tmp_path / "out" / LOG_FOLDER).glob("rank*.jsonl")
              for line in log.read_text().splitlines()]
    assert len(logged) == len(FACES) + 1  # every batch up to the bad file is logged, the bad file too
    assert score(faces, tmp_path / "out", tiny_weights, "--batch-size", 2) == 0
    assert len(read_score_file(tmp_path / "out" / "GraFIQs_image.txt")) == len(FACES)


def test_full_disk_is_a_clear_error_and_the_same_command_resumes(tmp_path, tiny_weights, faces, capsys, monkeypatch):
    assert score(faces, tmp_path / "full", tiny_weights, "--batch-size", 2) == 0
    calls = {"n": 0}
    real_fsync = os.fsync

    def fsync_until_full(fd):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(writers.os, "fsync", fsync_until_full)
    assert score(faces, tmp_path / "cut", tiny_weights, "--batch-size", 2) == 4
    err = capsys.readouterr().err
    assert "No space left on device" in err and "rerun the same command to resume" in err
    monkeypatch.setattr(writers.os, "fsync", real_fsync)
    assert score(faces, tmp_path / "cut", tiny_weights, "--batch-size", 2) == 0
    for name in ("GraFIQs_image.txt", "scores.csv", "errors.csv"):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "full" / name).read_text()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_a_clear_error(tmp_path, tiny_weights, faces, capsys):
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert score(faces, out, tiny_weights) == 4
        assert "cannot write" in capsys.readouterr().err
    finally:
        out.chmod(0o700)


def test_symlink_loops_end_and_self_links_are_named(tmp_path, tiny_weights, faces):
    (faces / "sub").mkdir()
    (faces / "sub" / "again.png").write_bytes((faces / "clean.png").read_bytes())
    (faces / "sub" / "loop").symlink_to(faces, target_is_directory=True)  # faces/sub/loop -> faces
    (faces / "self.png").symlink_to(faces / "self.png")  # a link to itself
    found = [Path(p).relative_to(faces).as_posix() for p in list_images(faces, recursive=True)]
    assert sorted(found) == sorted(FACES + ["self.png", "sub/again.png"])
    assert score(faces, tmp_path / "out", tiny_weights, "--recursive") == 0
    errors = {Path(r["path"]).name: r["reason"] for r in read_csv(tmp_path / "out" / "errors.csv")}
    assert list(errors) == ["self.png"] and "symbolic links" in errors["self.png"]


# ------------------------------------------------------------------------------------- fuzzing

SEEDS = [cv2.imencode(ext, np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8))[1].tobytes()
         for ext in (".png", ".jpg", ".bmp", ".webp")]


def _decodes_or_refuses(data: bytes) -> None:
    try:
        image = decode_image(data, source="fuzz")
    except ImageError:
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@fuzz
@given(st.binary(max_size=2000))
def test_fuzz_image_loader_with_random_bytes(data):
    _decodes_or_refuses(data)


@fuzz
@given(st.sampled_from(SEEDS), st.data())
def test_fuzz_image_loader_with_mutated_images(original, data):
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    _decodes_or_refuses(bytes(mutated[:cut] if data.draw(st.booleans()) else mutated))


PAIR_TOKENS = st.sampled_from(["a.jpg", "b.jpg", "missing.jpg", "1", "0", "2", "-1", "x", "", " ", "\t", "10", "300",
                               "Abe", "Abe_0001", "é", "\x00"])


@fuzz
@given(st.lists(st.lists(PAIR_TOKENS, max_size=5).map(" ".join), max_size=6))
def test_fuzz_pair_list(lines):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "images").mkdir()
        for name in ("a.jpg", "b.jpg"):
            (root / "images" / name).write_bytes(SEEDS[1])
        (root / "pair_list.txt").write_text("\n".join(lines), encoding="utf-8")
        try:
            vset = load_pair_list(root)
        except InputError:
            return
        assert len(vset.pairs) == len(vset.issame) and vset.pairs.max(initial=0) < max(vset.num_images, 1)


@fuzz
@given(st.lists(st.lists(PAIR_TOKENS, max_size=5).map("\t".join), max_size=6))
def test_fuzz_lfw_pairs(lines):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "Abe").mkdir()
        (root / "Abe" / "Abe_0001.jpg").write_bytes(SEEDS[1])
        (root / "pairs.txt").write_text("\n".join(lines), encoding="utf-8")
        try:
            vset = load_lfw_pairs(root / "pairs.txt", root)
        except GrafiqsError:
            return
        assert len(vset.pairs) == len(vset.issame)


def test_header_claiming_sizes_beyond_opencv_limits_is_an_image_error():
    """Found by the fuzzer: cv2.imdecode raises cv2.error (not None) for a BMP whose height field is absurd."""
    bmp = bytearray(SEEDS[2])
    bmp[22:26] = (2**31 - 1).to_bytes(4, "little")  # biHeight
    with pytest.raises(ImageError, match="not a decodable image|pixels"):  # Pillow's header check comes first
        decode_image(bytes(bmp), source="huge.bmp")


@pytest.mark.parametrize("fmt", ["ICO", "TGA", "PDF"])
def test_unsupported_formats_are_refused_with_a_reason(fmt):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(buffer, fmt)
    with pytest.raises(ImageError, match="not a decodable image"):
        decode_image(buffer.getvalue(), source=f"face.{fmt.lower()}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without read permission")
def test_unreadable_file_is_skipped_and_named(tmp_path, tiny_weights, faces):
    (faces / "locked.png").write_bytes((faces / "clean.png").read_bytes())
    (faces / "locked.png").chmod(0o000)
    try:
        assert score(faces, tmp_path / "out", tiny_weights) == 0
        errors = {Path(r["path"]).name: r["reason"] for r in read_csv(tmp_path / "out" / "errors.csv")}
        assert list(errors) == ["locked.png"] and "cannot be read" in errors["locked.png"]
    finally:
        (faces / "locked.png").chmod(0o600)
