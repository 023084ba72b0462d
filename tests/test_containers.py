"""score.py --image-path on containers: a RecordIO set, a folder of RecordIO shards, a .bin, scored in place."""
import csv
import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from grafiqs.cli.score import main
from grafiqs.data.containers import open_container, parse_name, record_name
from grafiqs.data.decode import decode_image
from grafiqs.data.recordio import RecordIODataset, RecordIOReader, unpack_record, write_recordio
from grafiqs.data.verification import write_bin_pairs
from grafiqs.io.ledger import LOG_FOLDER

LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2]
BAD_KEY = 9  # its magic number is overwritten: a bad record, skipped with the reason (last: see the resume test)
GROUPS = ("image", "block1", "block2", "block3", "block4", "bns_loss")


def face_like(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:112, 0:112].astype(np.float32) / 112
    channels = [np.sin(rng.uniform(1, 6) * x + rng.uniform(1, 6) * y + rng.uniform(0, 3)) for _ in range(3)]
    return (np.stack(channels, -1) * 90 + 128 + rng.normal(0, 6, (112, 112, 3))).clip(0, 255).astype(np.uint8)


def write_set(root: Path, labels=LABELS, seed: int = 0) -> Path:
    write_recordio(root, ((face_like(seed + i), label) for i, label in enumerate(labels)))
    return root


def break_record(root: Path, key: int) -> None:
    offset = dict(tuple(map(int, line.split("\t"))) for line in (root / "train.idx").read_text().splitlines())[key]
    with open(root / "train.rec", "r+b") as rec:
        rec.seek(offset)
        rec.write(b"\x00\x00\x00\x00")


def score(image_path, out, weights, *extra) -> int:
    return main(["--image-path", str(image_path), "--output-dir", str(out), "--weights", str(weights),
                 "--batch-size", "4", "--compile", "off", *map(str, extra)])


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def scored_set(tmp_path_factory, tiny_weights):
    """A tiny RecordIO set with one bad record, scored in place (decoded in one DataLoader worker)."""
    root = tmp_path_factory.mktemp("container")
    write_set(root / "set")
    break_record(root / "set", BAD_KEY)
    assert score(root / "set", root / "full", tiny_weights, "--num-workers", 1) == 0
    return root


def test_a_recordio_set_scores_as_its_images_unpacked_to_png_names_labels_and_bad_records(scored_set, tiny_weights):
    root = scored_set
    png = root / "png"
    png.mkdir(exist_ok=True)
    reader = RecordIOReader(root / "set" / "train.rec", root / "set" / "train.idx")
    for key in range(1, len(LABELS) + 1):
        if key == BAD_KEY:  # the same batches: an unreadable file where the bad record is
            (png / f"{key:06d}.png").write_bytes(b"not an image")
            continue
        image = decode_image(unpack_record(reader.read(key))[2])  # BGR, as score.py decodes
        assert cv2.imwrite(str(png / f"{key:06d}.png"), image)  # PNG: lossless
    assert score(png, root / "png_out", tiny_weights, "--num-workers", 0) == 0

    rows = read_csv(root / "full" / "scores.csv")
    names = [record_name(str(root / "set" / "train.rec"), key) for key in range(1, len(LABELS) + 1) if key != BAD_KEY]
    assert [r["path"] for r in rows] == names
    assert rows[0]["path"].endswith("set/train.rec#000001") and parse_name(rows[0]["path"])[1] == 1
    assert [int(r["label"]) for r in rows] == [label for key, label in enumerate(LABELS, 1) if key != BAD_KEY]
    unpacked = {Path(r["path"]).stem: r for r in read_csv(root / "png_out" / "scores.csv")}
    assert "label" not in next(iter(unpacked.values()))  # image files have no identity label
    for row in rows:
        other = unpacked[f"{parse_name(row['path'])[1]:06d}"]
        for group in GROUPS:
            assert float(row[group]) == pytest.approx(float(other[group]), rel=1e-6, abs=0), (row["path"], group)
    errors = read_csv(root / "full" / "errors.csv")
    assert [e["path"] for e in errors] == [record_name(str(root / "set" / "train.rec"), BAD_KEY)]
    assert "bad magic number" in errors[0]["reason"]
    official = (root / "full" / "GraFIQs_image.txt").read_text().splitlines()
    assert [line.rpartition(" ")[0] for line in official] == names


def test_a_killed_container_run_resumes_to_byte_identical_files(scored_set, tiny_weights, capsys):
    root = scored_set
    cut = root / "cut"
    shutil.rmtree(cut, ignore_errors=True)
    assert score(root / "set" / "train.rec", cut, tiny_weights, "--num-workers", 0) == 0  # the .rec path itself
    log = cut / LOG_FOLDER / "rank0.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    # as kill -9 leaves it: the first batch and half a line of the second. Resumed batches hold the same images as
    # the uninterrupted run's (CPU kernels differ by ~1e-8 between batch sizes; a bad record is retried)
    log.write_text("".join(lines[:4]) + lines[4][:40])
    for final in (p for p in cut.iterdir() if p.is_file()):
        final.unlink()
    capsys.readouterr()
    assert score(root / "set" / "train.rec", cut, tiny_weights, "--num-workers", 0) == 0
    assert f"resuming: 4 of {len(LABELS)} images already scored" in capsys.readouterr().out
    for name in ("GraFIQs_image.txt", "GraFIQs_block4.txt", "scores.csv", "errors.csv"):
        assert (cut / name).read_bytes() == (root / "full" / name).read_bytes(), name


def test_a_changed_container_is_scored_anew_never_mixed(scored_set, tiny_weights, capsys):
    root = scored_set
    changed = root / "changed"
    shutil.copytree(root / "full", changed)
    stat = os.stat(root / "set" / "train.rec")  # the container changes (a new mtime): nothing of it is reused
    os.utime(root / "set" / "train.rec", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        capsys.readouterr()
        assert score(root / "set", changed, tiny_weights, "--num-workers", 0) == 0
    finally:
        os.utime(root / "set" / "train.rec", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "resuming" not in capsys.readouterr().out
    log = changed / LOG_FOLDER / "rank0.jsonl"
    logged = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{") and line.endswith("}")]
    assert len({tuple(r["file"]) for r in logged if "file" in r}) == 2 * (len(LABELS) - 1)  # each record twice


def test_a_folder_of_shards_and_a_bin_are_scored_in_place_with_names_that_read_back(tmp_path, tiny_weights):
    shards = tmp_path / "shards"
    shards.mkdir()
    for number, labels in enumerate(([0, 0, 1], [2, 3])):
        write_set(tmp_path / f"part{number}", labels, seed=10 * number)
        for suffix in ("rec", "idx"):
            os.replace(tmp_path / f"part{number}" / f"train.{suffix}", shards / f"train_{number}.{suffix}")
    assert score(shards, tmp_path / "out", tiny_weights, "--num-workers", 0) == 0
    rows = read_csv(tmp_path / "out" / "scores.csv")
    assert [(Path(parse_name(r["path"])[0]).name, parse_name(r["path"])[1], int(r["label"])) for r in rows] == [
        ("train_0.rec", 1, 0), ("train_0.rec", 2, 0), ("train_0.rec", 3, 1), ("train_1.rec", 1, 2), ("train_1.rec", 2, 3)]
    container = open_container(shards)
    shard, key = container.locate(rows[3]["path"])
    assert (shard.spelled, key) == (str(shards / "train_1.rec"), 1)

    images = [cv2.imencode(".png", face_like(20 + i))[1].tobytes() for i in range(4)]
    write_bin_pairs(tmp_path / "lfw.bin", images, [True, False])
    assert score(tmp_path / "lfw.bin", tmp_path / "bin_out", tiny_weights, "--num-workers", 0) == 0
    rows = read_csv(tmp_path / "bin_out" / "scores.csv")
    assert [r["path"] for r in rows] == [f"{tmp_path / 'lfw.bin'}#{i:06d}" for i in range(4)]
    assert "label" not in rows[0] and all(math.isfinite(float(r["image"])) for r in rows)


def test_container_options_that_cannot_apply_are_one_line_errors_creating_nothing(tmp_path, tiny_weights, capsys):
    write_set(tmp_path / "set", [0, 1])
    for extra, message in ((["--recursive"], "--recursive select image files"),
                           (["--image-extension", "png"], "--image-extension select image files")):
        assert score(tmp_path / "set", tmp_path / "out", tiny_weights, *extra) == 2
        assert message in capsys.readouterr().err
    assert score(tmp_path / "set" / "train.idx", tmp_path / "out", tiny_weights) == 2
    assert "give the .rec file" in capsys.readouterr().err
    os.remove(tmp_path / "set" / "train.idx")
    assert score(tmp_path / "set", tmp_path / "out", tiny_weights) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no index train.idx" in err
    assert not (tmp_path / "out").exists()



def test_a_real_score_run_curates_into_a_set_that_reads_back(scored_set, tmp_path):
    from grafiqs.experiments.curation import main as curate

    root = scored_set
    before = (root / "set" / "train.rec").read_bytes()
    assert curate(["--input", str(root / "set"), "--scores", str(root / "full"), "--output_dir", str(tmp_path / "cur"),
                   "--best_k", "2", "--group", "block4"]) == 0
    assert (root / "set" / "train.rec").read_bytes() == before
    rows = read_csv(root / "full" / "scores.csv")
    best = []
    for label in sorted({r["label"] for r in rows}):
        mine = sorted((float(r["block4"]), parse_name(r["path"])[1]) for r in rows if r["label"] == label)
        best += sorted(key for _, key in mine[:2])
    out = RecordIODataset(tmp_path / "cur")
    source = RecordIOReader(root / "set" / "train.rec", root / "set" / "train.idx")
    assert len(out) == len(best) == 6 and [out.label(i) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    for new_key, old_key in enumerate(best, start=1):
        assert unpack_record(out.reader.read(new_key))[2] == unpack_record(source.read(old_key))[2]
    report = read_csv(tmp_path / "cur" / "identities.csv")
    assert report[-1]["label"] == "unreadable" and report[-1]["not_scored"] == "1"  # the bad record
