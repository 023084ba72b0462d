"""curate.py: a new RecordIO set from a scored one, by rule; the input is never modified."""
import csv
import hashlib
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from grafiqs.data.containers import record_name
from grafiqs.data.recordio import RecordIODataset, RecordIOReader, RecordIOWriter, pack_record, unpack_record, write_recordio
from grafiqs.experiments.curation import (ABOVE_THRESHOLD, IDENTITY_TOO_SMALL, KEPT, NOT_AMONG_BEST, NOT_FINITE, main,
                                          select)
from grafiqs.io.score_files import write_csv

LABELS = [0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 3, 3]
# magnitude per record key 1..12 (larger = lower quality); key 3 is NaN, key 12 was never scored
MAGNITUDES = {1: 0.5, 2: 0.1, 3: math.nan, 4: 0.3, 5: 0.2, 6: 0.9, 7: 0.25, 8: 0.1, 9: 0.4, 10: 0.15, 11: 0.15}


def face(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8), (9, 9), 3)


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def fake_scores(run: Path, rec: Path, magnitudes=MAGNITUDES, labels=None) -> Path:
    """A score run's scores.csv as score.py writes it for a RecordIO set (only the columns curation reads matter);
    `labels`: record key -> label (default: LABELS of keys 1..12)."""
    labels = labels or {key: label for key, label in enumerate(LABELS, start=1)}
    run.mkdir(parents=True, exist_ok=True)
    rows = [[record_name(str(rec), key), value, 0.0, 0.0, 0.0, 0.0, 1.0, -math.log10(value) if value == value else "nan",
             0, "ok" if value == value else "non-finite gradient", labels[key]] for key, value in magnitudes.items()]
    write_csv(run / "scores.csv", ["path", "image", "block1", "block2", "block3", "block4", "bns_loss", "quality",
                                   "resized", "status", "label"], rows)
    return run


@pytest.fixture
def dataset(tmp_path) -> Path:
    write_recordio(tmp_path / "set", ((face(i), label) for i, label in enumerate(LABELS)))
    return tmp_path / "set"


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_the_rules_apply_in_order_and_ties_go_to_the_earlier_image():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 3])
    values = np.array([0.5, 0.1, np.nan, 0.3, 0.2, 0.9, 0.25, 0.1, 0.4, 0.15, 0.15])
    assert (select(labels, values) == np.where(np.isnan(values), NOT_FINITE, KEPT)).all()
    reason = select(labels, values, threshold=0.45, best_k=2, min_images=2)
    assert reason.tolist() == [ABOVE_THRESHOLD, KEPT, NOT_FINITE, KEPT, KEPT, ABOVE_THRESHOLD, KEPT,
                               IDENTITY_TOO_SMALL, NOT_AMONG_BEST, KEPT, KEPT]
    # ceil(0.3 x 10) is 3, not 4 (0.3 * 10 = 3.0000000000000004); ties: the earlier image wins
    assert (select(np.zeros(10), np.ones(10), best_fraction=0.3) == KEPT).sum() == 3
    assert select(np.zeros(3), np.array([0.2, 0.1, 0.1]), best_k=1).tolist() == [NOT_AMONG_BEST, KEPT, NOT_AMONG_BEST]
    assert select(np.zeros(3), np.array([0.2, 0.1, 0.3]), best_fraction=0.5, best_k=5).tolist() == [
        KEPT, KEPT, NOT_AMONG_BEST]


def test_curation_writes_an_insightface_set_that_reads_back_and_never_touches_the_input(tmp_path, dataset, capsys):
    before = digest(dataset)
    run = fake_scores(tmp_path / "run", dataset / "train.rec")
    command = ["--input", str(dataset), "--scores", str(run), "--output_dir", str(tmp_path / "cur"),
               "--threshold", "0.45", "--best_k", "2", "--min_images", "2"]
    assert main(command) == 0
    assert "kept 6 of 12 records (3 of 4 identities)" in capsys.readouterr().out
    assert digest(dataset) == before

    out = RecordIODataset(tmp_path / "cur")
    kept = [2, 4, 5, 7, 10, 11]  # identity 2 has one image left (dropped); 3 keeps its best two, the tie to key 10
    assert out.header == (len(kept) + 1, len(kept) + 1 + 3) and out.num_classes == 3
    assert [out.label(i) for i in range(len(out))] == [0, 0, 1, 1, 2, 2]  # relabelled 0..C-1 in the old order
    source, copy = RecordIOReader(dataset / "train.rec", dataset / "train.idx"), out.reader
    for new_key, old_key in enumerate(kept, start=1):
        assert unpack_record(copy.read(new_key))[2] == unpack_record(source.read(old_key))[2]  # image bytes as they were
    ranges = [unpack_record(copy.read(key))[0].label for key in range(len(kept) + 1, len(kept) + 4)]
    assert ranges == [(1.0, 3.0), (3.0, 5.0), (5.0, 7.0)]
    assert (tmp_path / "cur" / "property").read_text() == "3,112,112\n"

    report = {row["label"]: row for row in read_csv(tmp_path / "cur" / "identities.csv")}
    assert [report["0"][c] for c in ("new_label", "records", "scored", "kept", "removed", "not_finite",
                                     "above_threshold")] == ["0", "4", "4", "2", "2", "1", "1"]
    assert [report["2"][c] for c in ("new_label", "kept", "identity_too_small")] == ["", "0", "1"]
    assert [report["3"][c] for c in ("new_label", "records", "scored", "not_scored", "not_among_best")] == [
        "2", "4", "3", "1", "1"]
    assert (tmp_path / "cur" / "histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    decisions = {int(r["path"].rpartition("#")[2]): r["decision"] for r in read_csv(tmp_path / "cur" / "images.csv")}
    assert decisions == {1: "above_threshold", 2: "kept", 3: "not_finite", 4: "kept", 5: "kept", 6: "above_threshold",
                         7: "kept", 8: "identity_too_small", 9: "not_among_best", 10: "kept", 11: "kept"}
    assert main(command) == 0  # its own files are replaced by a rerun


def test_a_config_file_a_headerless_input_and_several_score_runs(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    with RecordIOWriter(folder / "part.rec", folder / "part.idx") as writer:  # mxnet im2rec style: no header record
        for key, label in enumerate([0, 0, 1, 1]):
            writer.write(pack_record(cv2.imencode(".png", face(key))[1].tobytes(), float(label), id=key), key=key)
    rec = folder / "part.rec"
    labels = {1: 0, 2: 1, 3: 1}
    fake_scores(tmp_path / "run0", rec, {1: 0.2, 2: 0.3}, labels)  # the set scored in two parts
    second = fake_scores(tmp_path / "run1", rec, {3: 0.1}, labels)
    config = tmp_path / "curate.yaml"
    config.write_text(f"input: {rec}\nscores: [{tmp_path / 'run0'}, {second / 'scores.csv'}]\n"
                      f"output_dir: {tmp_path / 'out'}\nbest_fraction: 0.5\n")
    assert main(["--config", str(config)]) == 0
    out = RecordIODataset(tmp_path / "out")
    assert out.header is None and len(out) == 2 and [out.label(i) for i in range(2)] == [0, 1]
    assert (tmp_path / "out" / "property").read_text() == "2,112,112\n"  # from the first kept image
    # key 0 was never scored; identity 0 keeps key 1 (ceil(0.5 x 1)), identity 1 the better of keys 2 and 3
    assert unpack_record(out.reader.read(0))[2] == unpack_record(RecordIOReader(rec, folder / "part.idx").read(1))[2]


def test_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path, dataset, capsys):
    run = fake_scores(tmp_path / "run", dataset / "train.rec")
    base = ["--input", str(dataset), "--scores", str(run)]
    cases = [
        (["--output_dir", str(dataset)], "holds the input set"),
        (["--output_dir", str(tmp_path / "o"), "--best_fraction", "1.5"], "best_fraction must lie in (0, 1]"),
        (["--output_dir", str(tmp_path / "o"), "--group", "block9"], "group must be one of"),
        (["--output_dir", str(tmp_path / "o"), "--threshold", "1e-9"], "the rules keep no image"),
        (["--output_dir", str(tmp_path / "o"), "--treshold", "1"], "treshold"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    other = tmp_path / "other"
    write_recordio(other, [(face(0), 0)])
    assert main(["--input", str(other), "--scores", str(run), "--output_dir", str(tmp_path / "o")]) == 2
    assert "names no image record of --input" in capsys.readouterr().err
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "train.rec").write_bytes(b"mine")
    assert main(base + ["--output_dir", str(tmp_path / "foreign")]) == 2
    assert "not written by this program" in capsys.readouterr().err
    assert (tmp_path / "foreign" / "train.rec").read_bytes() == b"mine"
    assert not (tmp_path / "o").exists()


def test_a_container_changed_since_it_was_scored_stops_instead_of_mixing(tmp_path, dataset, capsys):
    labels = {key: label for key, label in enumerate(LABELS, start=1)}
    labels[2] = 1  # the scores say key 2 is identity 1: not what the container holds
    run = fake_scores(tmp_path / "run", dataset / "train.rec", labels=labels)
    assert main(["--input", str(dataset), "--scores", str(run), "--output_dir", str(tmp_path / "o")]) == 2
    assert "changed since it was scored" in capsys.readouterr().err
    assert not [p for p in (tmp_path / "o").iterdir() if p.is_file()]  # no file half written
