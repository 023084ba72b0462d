"""score.py under Lightning DDP with two CPU processes: every image exactly once, same scores."""
import csv
import json
import subprocess
import sys
from pathlib import Path

from conftest import GOLDEN
from grafiqs.lit.writers import LOG_FOLDER

ROOT = Path(__file__).parents[1]


def run_score(images, out, weights, *extra):
    command = [sys.executable, "score.py", "--image-path", str(images), "--weights", str(weights),
               "--output-dir", str(out), "--batch-size", "2", "--num-workers", "0", *extra]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def rows(path):
    with open(path, newline="") as file:
        return {row["path"]: row for row in csv.DictReader(file)}


def test_two_cpu_processes_score_every_image_once_like_one_process(tmp_path, tiny_weights):
    images = tmp_path / "images"
    images.mkdir()
    calibration = sorted((GOLDEN / "images").glob("calib_*.png"))
    for i in range(11):  # odd count: the ranks get uneven shares
        (images / f"face_{i:02d}.png").write_bytes(calibration[i].read_bytes())
    run_score(images, tmp_path / "one", tiny_weights)
    run_score(images, tmp_path / "two", tiny_weights, "--accelerator", "cpu", "--devices", "2")

    logged = []
    for log in sorted((tmp_path / "two" / LOG_FOLDER).glob("rank*.jsonl")):
        logged.append([json.loads(line)["path"] for line in log.read_text().splitlines()])
    assert len(logged) == 2 and all(logged), "both ranks scored a share"
    every = [path for share in logged for path in share]
    assert sorted(every) == sorted(set(every)) and len(every) == 11  # exactly once

    single, distributed = rows(tmp_path / "one" / "scores.csv"), rows(tmp_path / "two" / "scores.csv")
    assert list(single) == list(distributed)
    for path, row in single.items():
        for column in ("image", "block1", "block2", "block3", "block4", "bns_loss"):
            a, b = float(row[column]), float(distributed[path][column])
            assert abs(a - b) <= 1e-5 * abs(a), (path, column, a, b)
    assert (tmp_path / "one" / "GraFIQs_image.txt").read_text().splitlines().__len__() == 11


def test_fewer_images_than_processes_are_scored_once_and_the_idle_process_ends(tmp_path, tiny_weights):
    """Lightning's own predict sampler refuses fewer items than processes; ShardSampler gives the idle rank an
    empty batch so both ranks run the same hooks and neither waits for ever."""
    images = tmp_path / "one"
    images.mkdir()
    (images / "face.png").write_bytes((GOLDEN / "images" / "clean.png").read_bytes())
    run_score(images, tmp_path / "out", tiny_weights, "--accelerator", "cpu", "--devices", "2")
    logged = [json.loads(line)["path"] for log in (tmp_path / "out" / LOG_FOLDER).glob("rank*.jsonl")
              for line in log.read_text().splitlines()]
    assert logged == [str(images / "face.png")]
    assert len(rows(tmp_path / "out" / "scores.csv")) == 1


def test_strict_with_the_bad_file_on_the_second_process_stops_every_process_with_exit_3(tmp_path, tiny_weights):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "c.png"):
        (images / name).write_bytes((GOLDEN / "images" / "clean.png").read_bytes())
    (images / "b.png").write_bytes(b"not an image")  # index 1: the second process's share
    command = [sys.executable, "score.py", "--image-path", str(images), "--weights", str(tiny_weights), "--output-dir",
               str(tmp_path / "out"), "--batch-size", "1", "--num-workers", "0", "--accelerator", "cpu", "--devices", "2",
               "--strict"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and done.stderr.count("b.png: not a decodable image") == 2


def test_two_cpu_processes_score_a_recordio_set_in_place_every_record_once_like_one_process(tmp_path, tiny_weights):
    from test_containers import score, write_set

    write_set(tmp_path / "set")
    assert score(tmp_path / "set", tmp_path / "one", tiny_weights, "--num-workers", 0) == 0
    run_score(tmp_path / "set", tmp_path / "two", tiny_weights, "--accelerator", "cpu", "--devices", "2")
    every = [json.loads(line)["path"] for log in (tmp_path / "two" / LOG_FOLDER).glob("rank*.jsonl")
             for line in log.read_text().splitlines()]
    assert sorted(every) == sorted(set(every)) and len(every) == 9  # each record exactly once over both ranks
    single, distributed = rows(tmp_path / "one" / "scores.csv"), rows(tmp_path / "two" / "scores.csv")
    assert list(single) == list(distributed)
    for path, row in single.items():
        assert row["label"] == distributed[path]["label"]
        for column in ("image", "block4", "bns_loss"):
            assert abs(float(row[column]) - float(distributed[path][column])) <= 1e-5 * abs(float(row[column]))
