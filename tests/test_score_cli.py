"""score.py behaviour beyond the golden numbers: inputs, bad files, outputs, resume."""
import csv
import math
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FACES, GOLDEN
from grafiqs.cli.score import main
from grafiqs.io.score_files import read_score_file
from grafiqs.lit.writers import LOG_FOLDER

def score(folder, out, weights, *extra) -> int:
    return main(["--image-path", str(folder), "--output-dir", str(out), "--weights", str(weights),
                 "--num-workers", "0", *map(str, extra)])


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_script_scores_a_single_image_file(tmp_path, tiny_weights, faces):
    image = faces / "clean.png"
    done = subprocess.run([sys.executable, "score.py", "--image-path", str(image), "--weights", str(tiny_weights),
                           "--output-dir", str(tmp_path / "out")], cwd=Path(__file__).parents[1],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "colour order fed to the model: BGR" in done.stdout
    for group in ("image", "block1", "block2", "block3", "block4"):
        assert list(read_score_file(tmp_path / "out" / f"GraFIQs_{group}.txt")) == [str(image)]


def test_scores_csv_has_every_group_and_quality_is_higher_for_smaller_magnitude(tmp_path, tiny_weights, faces):
    assert score(faces, tmp_path, tiny_weights, "--batch-size", 4) == 0
    rows = read_csv(tmp_path / "scores.csv")
    assert [Path(r["path"]).name for r in rows] == sorted(FACES)
    assert set(rows[0]) == {"path", "image", "block1", "block2", "block3", "block4", "bns_loss", "quality", "quality_0_100",
                            "resized", "status", "face_probability", "alignment_error"}
    by_magnitude = sorted(rows, key=lambda r: float(r["image"]))
    assert [float(r["quality"]) for r in by_magnitude] == sorted((float(r["quality"]) for r in rows), reverse=True)
    official = read_score_file(tmp_path / "GraFIQs_image.txt")
    assert {r["path"]: float(r["image"]) for r in rows} == official
    assert read_csv(tmp_path / "errors.csv") == []


def test_extensions_recursion_and_path_replacement(tmp_path, tiny_weights, faces):
    (faces / "sub").mkdir()
    (faces / "sub" / "deep.PNG").write_bytes((faces / "clean.png").read_bytes())
    (faces / "copy.jpg").write_bytes((faces / "clean.png").read_bytes())  # PNG bytes under .jpg decode fine
    (faces / "notes.txt").write_text("not an image")
    assert score(faces, tmp_path / "a", tiny_weights, "--image-extension", "jpg") == 0
    assert list(read_score_file(tmp_path / "a" / "GraFIQs_image.txt")) == [str(faces / "copy.jpg")]
    assert score(faces, tmp_path / "b", tiny_weights, "--image-extension", "png,jpg", "--recursive",
                 "--path-replace", str(faces), "--path-replace-with", "/data") == 0
    names = list(read_score_file(tmp_path / "b" / "GraFIQs_block2.txt"))
    assert names == sorted(["/data/copy.jpg", "/data/sub/deep.PNG"] + [f"/data/{n}" for n in FACES])


def test_written_paths_are_normalised_as_the_official_pathlib_glob_writes_them(tmp_path, tiny_weights, faces, monkeypatch):
    """extract_grafiqs.py writes str(p) for p in Path(image_path).glob(...): './faces//' becomes 'faces'."""
    monkeypatch.chdir(faces.parent)
    assert score("./faces//", tmp_path / "out", tiny_weights) == 0
    official = sorted(str(p) for p in Path("./faces//").glob("*.png"))
    assert list(read_score_file(tmp_path / "out" / "GraFIQs_image.txt")) == official == [f"faces/{n}" for n in sorted(FACES)]


def test_bad_files_are_skipped_named_and_never_scored(tmp_path, tiny_weights, faces, capsys):
    (faces / "empty.png").write_bytes(b"")
    (faces / "truncated.png").write_bytes((faces / "clean.png").read_bytes()[:300])
    (faces / "text.png").write_text("this is not a png")
    assert score(faces, tmp_path, tiny_weights, "--batch-size", 3) == 0
    errors = {Path(r["path"]).name: r["reason"] for r in read_csv(tmp_path / "errors.csv")}
    assert set(errors) == {"empty.png", "truncated.png", "text.png"}
    assert "empty file" in errors["empty.png"] and "not a decodable image" in errors["text.png"]
    scored = {Path(p).name for p in read_score_file(tmp_path / "GraFIQs_image.txt")}
    assert scored == set(FACES)
    assert "skipped 3 unreadable files" in capsys.readouterr().err


def test_no_images_or_no_weights_exit_with_one_clear_line(tmp_path, tiny_weights, capsys):
    (tmp_path / "empty").mkdir()
    assert score(tmp_path / "empty", tmp_path / "out", tiny_weights) == 2
    assert "no images with extension" in capsys.readouterr().err
    assert score(GOLDEN / "images", tmp_path / "out", tmp_path / "missing.pth") == 2
    assert "weights file not found" in capsys.readouterr().err
    assert score(tmp_path / "nowhere", tmp_path / "out", tiny_weights) == 2
    assert "image path not found" in capsys.readouterr().err


def test_resized_inputs_are_flagged(tmp_path, tiny_weights, capsys):
    folder = tmp_path / "sizes"
    folder.mkdir()
    for name in ("clean.png", "large_160.png"):
        (folder / name).write_bytes((GOLDEN / "images" / name).read_bytes())
    assert score(folder, tmp_path / "out", tiny_weights) == 0
    assert {Path(r["path"]).name: r["resized"] for r in read_csv(tmp_path / "out" / "scores.csv")} == {
        "clean.png": "0", "large_160.png": "1"}
    assert "were not 112x112" in capsys.readouterr().err


def test_interrupted_run_resumes_to_identical_files(tmp_path, tiny_weights, faces):
    assert score(faces, tmp_path / "full", tiny_weights, "--batch-size", 2) == 0
    assert score(faces, tmp_path / "cut", tiny_weights, "--batch-size", 2) == 0
    # Simulate a kill -9 after two images: keep two records and half of the third line.
    log = tmp_path / "cut" / LOG_FOLDER / "rank0.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2]) + lines[2][:25])
    for final in (p for p in (tmp_path / "cut").iterdir() if p.is_file()):
        final.unlink()
    assert score(faces, tmp_path / "cut", tiny_weights, "--batch-size", 2) == 0
    records = [json.loads(l) for l in log.read_text().splitlines() if l.startswith("{") and l.endswith("}")]
    assert len(records) == len(FACES)  # the two finished images were not scored again
    for name in ("GraFIQs_image.txt", "GraFIQs_block4.txt", "scores.csv", "errors.csv"):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "full" / name).read_text()


def test_other_settings_in_the_same_output_folder_are_refused(tmp_path, tiny_weights, faces, capsys):
    assert score(faces, tmp_path, tiny_weights) == 0
    assert score(faces, tmp_path, tiny_weights, "--bgr2rgb") == 2
    assert "other settings (bgr2rgb)" in capsys.readouterr().err
    assert score(faces, tmp_path, tiny_weights, "--bgr2rgb", "--overwrite") == 0
    assert "RGB (--bgr2rgb)" in capsys.readouterr().out


def test_gpu_flag_without_cuda_falls_back_to_cpu(tmp_path, tiny_weights, faces, capsys):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert score(faces / "clean.png", tmp_path, tiny_weights, "--gpu", 0) == 0
    assert "no CUDA device is available; scoring on the CPU" in capsys.readouterr().err


def test_help_explains_direction_and_outputs(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("--image-path", "--bgr2rgb", "LARGER means", "higher is better", "scores.csv", "resumes"):
        assert phrase in text


def test_compile_auto_follows_the_speeds_measured_here_and_compiled_stages_score_like_eager(
        tmp_path, tiny_weights, faces, capsys, monkeypatch):
    """An eager run records its speed; with a compiled speed on record that pays for 6 images, --compile auto
    compiles (the last batch, 2 of 4, zero-padded) and the scores equal eager ones within 1e-4; the run replaces
    the recorded compilation time by the one it measured."""
    import torch

    from grafiqs.hardware import SpeedStore, Speeds
    from grafiqs.models.iresnet import build_iresnet

    monkeypatch.setenv("GRAFIQS_CACHE_DIR", str(tmp_path / "cache"))
    assert score(faces, tmp_path / "eager", tiny_weights, "--batch-size", 4, "--compile", "off") == 0
    store = SpeedStore()
    ((key, recorded),) = json.loads(store.path.read_text())["speeds"].items()
    assert f"torch {torch.__version__}" in key and "precision 32 | batch 4 | from image" in key
    assert recorded["eager"] > 0 and recorded["compiled"] is None  # the second batch was timed, the first warmed up
    store.put(key, Speeds(eager=recorded["eager"], compiled=recorded["eager"] / 10, compile=0.0))
    assert score(faces, tmp_path / "compiled", tiny_weights, "--batch-size", 4, "--compile", "auto") == 0
    assert "--compile auto: compiling for 6 images (measured on this machine" in capsys.readouterr().out
    assert store.get(key).compile > 0  # measured: the first compiled batch's time less a compiled batch's
    eager = read_csv(tmp_path / "eager" / "scores.csv")
    compiled = read_csv(tmp_path / "compiled" / "scores.csv")
    assert [r["path"] for r in eager] == [r["path"] for r in compiled] and len(eager) == len(FACES)
    for a, b in zip(eager, compiled):
        for group in ("image", "block1", "block2", "block3", "block4", "bns_loss"):
            assert float(b[group]) == pytest.approx(float(a[group]), rel=1e-4)


def test_channels_last_scores_within_1e_4_and_is_a_setting_of_its_own(tmp_path, tiny_weights, faces, capsys):
    assert score(faces, tmp_path / "nchw", tiny_weights, "--no-face-check") == 0
    assert score(faces, tmp_path / "nhwc", tiny_weights, "--no-face-check", "--channels-last") == 0
    for a, b in zip(read_csv(tmp_path / "nchw" / "scores.csv"), read_csv(tmp_path / "nhwc" / "scores.csv")):
        for group in ("image", "block1", "block2", "block3", "block4", "bns_loss"):
            assert float(b[group]) == pytest.approx(float(a[group]), rel=1e-4)
    assert score(faces, tmp_path / "nchw", tiny_weights, "--no-face-check", "--channels-last") == 2  # never mixed
    assert "other settings (channels_last)" in capsys.readouterr().err


def test_bf16_on_a_cpu_runs_channels_last_unless_told_otherwise(tmp_path, tiny_weights, faces, capsys):
    assert score(faces, tmp_path / "auto", tiny_weights, "--no-face-check", "--precision", "bf16") == 0
    assert score(faces, tmp_path / "on", tiny_weights, "--no-face-check", "--precision", "bf16", "--channels-last") == 0
    assert read_csv(tmp_path / "auto" / "scores.csv") == read_csv(tmp_path / "on" / "scores.csv")
    capsys.readouterr()
    assert score(faces, tmp_path / "auto", tiny_weights, "--no-face-check", "--precision", "bf16",
                 "--channels-last", "off") == 2  # NCHW bf16 is another setting: never mixed into the auto run
    assert "other settings (channels_last)" in capsys.readouterr().err


def test_groups_scores_only_what_is_asked_with_the_same_numbers(tmp_path, tiny_weights, faces, capsys):
    assert score(faces, tmp_path / "all", tiny_weights) == 0
    assert score(faces, tmp_path / "b4", tiny_weights, "--groups", "block4,block2") == 0
    assert sorted(p.name for p in (tmp_path / "b4").glob("GraFIQs_*.txt")) == ["GraFIQs_block2.txt", "GraFIQs_block4.txt"]
    every, some = read_csv(tmp_path / "all" / "scores.csv"), read_csv(tmp_path / "b4" / "scores.csv")
    assert list(some[0])[:3] == ["path", "block2", "block4"]
    for a, b in zip(every, some):
        for group in ("block2", "block4", "bns_loss"):
            assert float(b[group]) == pytest.approx(float(a[group]), rel=1e-6)
        assert float(b["quality"]) == pytest.approx(-math.log10(float(b["block2"])))  # first asked group, no image
    assert score(faces, tmp_path / "x", tiny_weights, "--groups", "block5") == 2
    assert "--groups takes a comma-separated subset" in capsys.readouterr().err


def test_the_summary_points_to_bf16_only_where_the_hardware_has_bf16_units(tmp_path, tiny_weights, faces, capsys,
                                                                            monkeypatch):
    """The note follows the bf16 units and the speeds on record, never this machine's own: the units are injected,
    and so are the speeds the last run compares (a float32 compiled speed on record, far faster than any eager batch,
    stays the fastest float32 speed whatever the run measures; its compilation time keeps --compile auto eager)."""
    import torch

    from grafiqs import hardware
    from grafiqs.hardware import Speeds

    found = hardware.bf16_units(torch)
    assert set(found) <= set(hardware.BF16_CPU_FLAGS.values()) | {u for u in found if u.startswith("CUDA")}
    monkeypatch.setattr(hardware, "bf16_units", lambda torch: ["AMX-BF16"])
    monkeypatch.setenv("GRAFIQS_CACHE_DIR", str(tmp_path / "cache"))  # no speeds measured yet
    assert score(faces, tmp_path / "a", tiny_weights, "--batch-size", 2) == 0
    assert "note: this machine has AMX-BF16: --precision bf16" in capsys.readouterr().out
    assert score(faces, tmp_path / "b", tiny_weights, "--batch-size", 2, "--precision", "bf16") == 0
    assert "note: this machine has" not in capsys.readouterr().out
    # both precisions measured here now: the note names bf16 only if it was measured faster
    store = hardware.SpeedStore()
    keys = {key.split("| precision ")[1].split(" ")[0]: key for key in json.loads(store.path.read_text())["speeds"]}
    assert set(keys) == {"32", "bf16"}
    for bf16_seconds, faster in ((0.5e-6, True), (2e-6, False)):  # float32: 1e-6 s per image, 1,000,000 img/s
        store.put(keys["32"], Speeds(eager=1.0, compiled=1e-6, compile=1e9))
        store.put(keys["bf16"], Speeds(eager=bf16_seconds))
        assert score(faces, tmp_path / f"c{faster}", tiny_weights, "--batch-size", 2) == 0
        out = capsys.readouterr().out
        assert "this machine has" not in out and "--compile auto: eager" in out
        if faster:
            assert "note: --precision bf16 ran 2000000.0 img/s on this machine for this setting, float32 1000000.0" in out
        else:
            assert "note: --precision bf16 ran" not in out
