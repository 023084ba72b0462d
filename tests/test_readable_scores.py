"""A score a person can read (issue 22): the calibrated 0-100 scalar, -1 where nothing can be assessed, the
aligned-face flag, OFIQ's CSV; the raw magnitudes stay exactly as they are."""
import csv
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from grafiqs import hardware
from grafiqs.cli.score import main
from grafiqs.synthetic import render
from grafiqs.errors import InputError
from grafiqs.evaluation.edc import edc, pair_quality
from grafiqs.experiments.demo import DEMO_WEIGHTS
from grafiqs.faces import check as face_check
from grafiqs.faces.nonfaces import blank, noise
from grafiqs.io.ledger import OutputFolder
from grafiqs.io.reading import file_digest
from grafiqs.quality.calibration import calibrate, calibration_path_for, fit_mapping, read_calibration

GROUPS = ("image", "block1", "block2", "block3", "block4")


def score(*arguments) -> int:
    return main([*map(str, arguments), "--num-workers", "0", "--compile", "off"])


def read_csv(path, delimiter=","):
    with open(path, newline="") as file:
        return list(csv.DictReader(file, delimiter=delimiter))


@pytest.fixture
def model(tmp_path, tiny_weights) -> Path:
    """A copy of the tiny weights: --calibrate writes beside them."""
    path = tmp_path / "model" / "tiny.pth"
    path.parent.mkdir()
    shutil.copy(tiny_weights, path)
    return path


@pytest.fixture
def reference(tmp_path) -> Path:
    folder = tmp_path / "reference"
    folder.mkdir()
    for i in range(20):
        cv2.imwrite(str(folder / f"face{i:02d}.png"), render(0, 1_000_000 + i, 0))
    return folder


def test_the_sigmoid_is_ofiqs_decreasing_in_the_magnitude_and_fits_the_reference():
    rng = np.random.default_rng(0)
    magnitudes = 10 ** rng.normal(1.9, 0.2, 2001)
    mapping, fit = fit_mapping(np.append(magnitudes, math.nan))  # NaN left out of the fit
    assert fit["images"] == 2001
    assert mapping(10 ** fit["log10_p50"]) == 50
    assert abs(int(mapping(10 ** fit["log10_p5"])) - 90) <= 1 and abs(int(mapping(10 ** fit["log10_p95"])) - 10) <= 1
    x = np.log10(magnitudes[:50])
    ofiq = [round(100 * (1 + -1 / (1 + math.exp(-(v - mapping.x0) / mapping.w)))) for v in x]
    assert mapping(magnitudes[:50]).tolist() == ofiq
    ordered = np.sort(magnitudes)
    assert (np.diff(mapping.unrounded(ordered)) < 0).all()  # strictly decreasing before rounding
    assert mapping([math.nan, 0.0, math.inf, 1e300]).tolist() == [-1, 100, 0, 0]
    with pytest.raises(InputError, match="at least 20"):
        fit_mapping(magnitudes[:19])


def test_edc_of_the_unrounded_scalar_equals_the_magnitudes_and_rounding_makes_ties():
    """The scalar is a strictly decreasing map of the magnitude: the same discard order, the same EDC. Rounding to
    integers ties images whose magnitudes differ a little: tied pairs are discarded together, so the rounded
    scalar's EDC has fewer points."""
    rng = np.random.default_rng(1)
    magnitudes = 10 ** rng.normal(1.9, 0.25, 400)
    first, second = rng.integers(0, 400, 5000), rng.integers(0, 400, 5000)
    mated = rng.random(5000) < 0.2
    scores = rng.normal(0.2, 0.1, 5000) + mated * (0.5 - 0.3 * np.log10(np.maximum(magnitudes[first],
                                                                                    magnitudes[second])) / 2)
    mapping = read_calibration(calibration_path_for(DEMO_WEIGHTS)).groups["image"]
    by_magnitude = edc(scores, mated, pair_quality(magnitudes[first], magnitudes[second], "lower_is_better"), fmr=1e-2)
    scalar = mapping.unrounded(magnitudes)
    by_scalar = edc(scores, mated, pair_quality(scalar[first], scalar[second]), fmr=1e-2)
    assert np.array_equal(by_scalar.discard, by_magnitude.discard) and np.array_equal(by_scalar.fnmr, by_magnitude.fnmr)
    assert by_scalar.pauc(0.3).normalised == by_magnitude.pauc(0.3).normalised
    rounded = mapping(magnitudes)
    by_rounded = edc(scores, mated, pair_quality(rounded[first], rounded[second]), fmr=1e-2)
    assert len(np.unique(rounded)) < len(np.unique(magnitudes)) and by_rounded.discard.size < by_magnitude.discard.size


def test_the_shipped_demo_calibration_belongs_to_the_demo_model():
    calibration = read_calibration(calibration_path_for(DEMO_WEIGHTS))
    calibration.check_for(file_digest(DEMO_WEIGHTS), "bgr", "shipped")
    assert set(calibration.groups) == set(GROUPS) and calibration.reference["used"] >= 390
    for group, mapping in calibration.groups.items():
        fit = calibration.reference["groups"][group]
        assert mapping(10 ** fit["log10_p50"]) == 50 and mapping(10 ** fit["log10_p5"]) > 70
    with pytest.raises(InputError, match="other weights"):
        calibration.check_for("0" * 64, "bgr", "shipped")
    with pytest.raises(InputError, match="fitted on BGR input"):
        calibration.check_for(calibration.weights_sha256, "rgb", "shipped")


def test_calibrate_fits_every_group_on_the_reference_and_writes_it_beside_the_weights(tmp_path, model, reference,
                                                                                       capsys):
    assert score("--calibrate", reference, "--weights", model, "--output-dir", tmp_path / "fit") == 0
    printed = capsys.readouterr().out
    written = calibration_path_for(model)
    assert written.read_bytes() == (tmp_path / "fit" / "calibration.json").read_bytes()
    calibration = read_calibration(written)
    calibration.check_for(file_digest(model), "bgr", written)
    assert set(calibration.groups) == set(GROUPS) and calibration.reference["used"] == 20
    assert f"calibration fitted on 20 of 20 reference images of {reference}" in printed
    for group, mapping in calibration.groups.items():
        assert f"{group}: Q = round(100 * (1 - sigmoid((log10(magnitude) - {mapping.x0:.6g}) / {mapping.w:.6g})))" in printed
    rows = read_csv(tmp_path / "fit" / "scores.csv")
    magnitudes = np.array([float(r["image"]) for r in rows])
    assert calibration.groups["image"](np.median(magnitudes)) == 50
    assert sorted(int(r["quality_0_100"]) for r in rows) == sorted(calibration.groups["image"](magnitudes).tolist())


def test_scalar_flag_and_ofiq_csv_leave_the_raw_magnitudes_as_they_are(tmp_path, model, faces, capsys):
    rng = np.random.default_rng(0)
    fitted = calibrate({g: 10 ** rng.normal(-1.2, 0.1, 50) for g in GROUPS}, file_digest(model), "bgr", {"used": 50})
    calibration_path_for(model).write_text(fitted.to_json())
    cv2.imwrite(str(faces / "blank.png"), blank(1))
    cv2.imwrite(str(faces / "noise.png"), noise(0))
    assert score("--image-path", faces, "--weights", model, "--output-dir", tmp_path / "out", "--ofiq-csv",
                 "--scalar-score-files", "--contact-sheet") == 0
    captured = capsys.readouterr()
    assert "warning: 2 images do not look like aligned faces" in captured.err
    assert f"from {calibration_path_for(model)}:" in captured.out
    rows = {Path(r["path"]).name: r for r in read_csv(tmp_path / "out" / "scores.csv")}
    assert {n: r["status"] for n, r in rows.items() if r["status"] != "ok"} == {
        "blank.png": "not an aligned face?", "noise.png": "not an aligned face?"}
    assert rows["blank.png"]["quality_0_100"] == rows["noise.png"]["quality_0_100"] == "-1"
    for row in rows.values():
        assert (float(row["face_probability"]) > 0.5) == (row["status"] == "ok")
        if row["status"] == "ok":
            assert int(row["quality_0_100"]) == fitted.groups["image"](float(row["image"]))
    ofiq = read_csv(tmp_path / "out" / "ofiq.csv", delimiter=";")
    assert list(ofiq[0]) == ["Filename", "GraFIQs", "GraFIQs.scalar"]
    assert [(r["Filename"], float(r["GraFIQs"]), r["GraFIQs.scalar"]) for r in ofiq] == [
        (r["path"], float(r["image"]), r["quality_0_100"]) for r in rows.values()]
    scalar = [line.rsplit(" ", 1) for line in (tmp_path / "out" / "GraFIQs_block4_scalar.txt").read_text().splitlines()]
    assert scalar == [[r["path"], str(fitted.groups["block4"](float(r["block4"])) if r["status"] == "ok" else -1)]
                      for r in rows.values()]

    sheet = cv2.imread(str(tmp_path / "out" / "contact_sheet.png"))  # 3 best, 3 worst of the 6 faces, each over |dL/dx|
    assert sheet.shape[0] > 400 and sheet.shape[1] > 300
    assert {"contact_sheet.png", "ofiq.csv", "GraFIQs_image_scalar.txt"} <= OutputFolder(tmp_path / "out").written()

    calibration_path_for(model).unlink()
    assert score("--image-path", faces, "--weights", model, "--output-dir", tmp_path / "plain", "--no-face-check") == 0
    for group in GROUPS:  # bit for bit what a run without calibration nor face check writes
        assert (tmp_path / "plain" / f"GraFIQs_{group}.txt").read_bytes() == \
            (tmp_path / "out" / f"GraFIQs_{group}.txt").read_bytes()
    plain = {Path(r["path"]).name: r for r in read_csv(tmp_path / "plain" / "scores.csv")}
    assert all(plain[n]["quality"] == rows[n]["quality"] and plain[n]["status"] == "ok" for n in rows)
    assert all(r["quality_0_100"] == "" and r["face_probability"] == "nan" for r in plain.values())
    assert "note: no calibration for these weights" in capsys.readouterr().out


def test_readable_options_that_cannot_work_are_one_line_errors_creating_nothing(tmp_path, model, reference, faces,
                                                                                  capsys):
    out = tmp_path / "out"
    cases = [
        (("--image-path", faces, "--ofiq-csv"), "--ofiq-csv need a calibration of these weights"),
        (("--image-path", faces, "--scalar-score-files"), "--scalar-score-files need a calibration"),
        (("--image-path", faces, "--calibration", tmp_path / "none.json"), "calibration file not found"),
        (("--calibrate", reference, "--image-path", faces), "leave --image-path out"),
        (("--calibrate", faces), "needs at least 20 reference images"),
        (("--image-path", faces), "is not a grafiqs-calibration-1 file"),  # a calibration file of {} from here on
        (("--calibrate", reference), "exists and is never replaced"),
    ]
    for number, (arguments, message) in enumerate(cases):
        if number == 5:
            calibration_path_for(model).write_text("{}")
        assert score(*arguments, "--weights", model, "--output-dir", out) == 2, arguments
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (arguments, err)
        assert not out.exists()
    shipped = calibration_path_for(DEMO_WEIGHTS)
    assert score("--image-path", faces, "--weights", model, "--output-dir", out, "--calibration", shipped) == 2
    assert "was fitted for other weights" in capsys.readouterr().err and not out.exists()


def test_without_the_onet_weights_or_with_a_stale_calibration_the_run_goes_on_with_a_note(tmp_path, model, faces,
                                                                                             monkeypatch, capsys):
    def missing():
        raise InputError("the MTCNN O-Net weights are missing: pip install --no-deps facenet-pytorch==2.6.0")

    monkeypatch.setattr(face_check, "onet_weights_file", missing)
    monkeypatch.setattr(hardware, "bf16_units", lambda torch: [])  # no bf16 note, whatever this CPU has
    stale = calibrate({"image": np.linspace(1, 2, 20)}, "0" * 64, "bgr", {})  # for weights replaced since
    calibration_path_for(model).write_text(stale.to_json())
    assert score("--image-path", faces, "--weights", model, "--output-dir", tmp_path / "out") == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    ignored = (f"note: ignored: calibration file {calibration_path_for(model)} was fitted for other weights (sha256 "
               f"000000000000..., these are {file_digest(model)[:12]}...); fit one with --calibrate REFERENCE_FOLDER; "
               "quality_0_100 is empty")
    skipped = ("note: face check skipped: the MTCNN O-Net weights are missing: pip install --no-deps "
               "facenet-pytorch==2.6.0; face_probability and alignment_error are NaN")
    assert notes == [ignored, skipped]
    rows = read_csv(tmp_path / "out" / "scores.csv")
    assert all(r["status"] == "ok" and math.isnan(float(r["alignment_error"])) and r["quality_0_100"] == ""
               for r in rows)


def test_gradient_maps_show_the_lowest_quality_images_and_replace_only_their_own(tmp_path, model, faces, capsys):
    maps = tmp_path / "maps"
    assert score("--image-path", faces, "--weights", model, "--output-dir", tmp_path / "out", "--no-face-check",
                 "--save-gradient-maps", maps, "--gradient-maps", "2") == 0
    rows = read_csv(tmp_path / "out" / "scores.csv")
    worst = sorted(rows, key=lambda r: float(r["quality"]))[:2]
    assert sorted(p.name for p in maps.glob("*.png")) == sorted(Path(r["path"]).name for r in worst)
    for row in worst:
        shown = cv2.imread(str(maps / Path(row["path"]).name))
        assert shown.shape == (112, 224, 3)  # the crop as scored | its |dL/dx| over the crop in gray
        if Path(row["path"]).name not in ("large_160.png", "small_64.png"):  # 112x112 inputs are shown unresized
            assert np.array_equal(shown[:, :112], cv2.imread(row["path"]))
        assert not np.array_equal(shown[:, 112:], shown[:, :112])
    assert "wrote 2 gradient maps" in capsys.readouterr().out

    assert score("--image-path", faces, "--weights", model, "--output-dir", tmp_path / "out", "--no-face-check",
                 "--save-gradient-maps", maps, "--gradient-maps", "1") == 0  # the earlier run's second map goes
    assert [p.name for p in maps.glob("*.png")] == [Path(worst[0]["path"]).name]

    mine = maps / Path(worst[1]["path"]).name  # a file of the user's at a name a map could take
    mine.write_bytes(b"mine")
    assert score("--image-path", faces, "--weights", model, "--output-dir", tmp_path / "other", "--no-face-check",
                 "--save-gradient-maps", maps) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "other").exists() and mine.read_bytes() == b"mine"
    assert score("--image-path", faces, "--weights", model, "--output-dir", tmp_path / "other",
                 "--gradient-maps", "3") == 2
    assert "--gradient-maps counts the maps of --save-gradient-maps" in capsys.readouterr().err
