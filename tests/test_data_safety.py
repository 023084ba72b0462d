"""score.py and the ablation runner tried as a careful and as a hostile user would: nothing of the user's is
lost, nothing hangs, results of different weights, settings or files never mix, bad options fail at once."""
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FACES, GOLDEN, tiny_iresnet
from grafiqs.data.decode import decode_image
from grafiqs.io.atomic import atomic_write_bytes
from grafiqs.io.ledger import LOG_FOLDER, OutputFolder
from grafiqs.io.score_files import name_problem, printable_path, read_score_file, write_score_file
from grafiqs.errors import InputError
from grafiqs.synthetic.drawn_set import SyntheticSetSpec, prepare_synthetic_set
from test_score_cli import read_csv, score

ROOT = Path(__file__).parents[1]
GROUPS = ("image", "block1", "block2", "block3", "block4")
TINY_SET = SyntheticSetSpec(num_identities=2, kinds=("blur",), severities=(0, 1))


def run_script(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "score.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def logged_records(out: Path) -> list[dict]:
    return [json.loads(line) for log in (out / LOG_FOLDER).glob("rank*.jsonl") for line in log.read_text().splitlines()
            if line.startswith("{")]


# ------------------------------------------------------------------ nothing the program did not create is lost


def test_a_forgotten_option_names_what_is_missing_instead_of_starting_the_demo(tmp_path, capsys):
    user_images = tmp_path / "D" / "images"
    user_images.mkdir(parents=True)
    (user_images / "mine.png").write_bytes((GOLDEN / "images" / "clean.png").read_bytes())
    assert score_without_images(tmp_path / "D", "--backbone", "iresnet100") == 2
    err = capsys.readouterr().err
    assert "give --image-path and --weights" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in user_images.iterdir()] == ["mine.png"]
    assert sorted(p.name for p in (tmp_path / "D").iterdir()) == ["images"]  # nothing created either


def score_without_images(out: Path, *extra) -> int:
    from grafiqs.cli.score import main

    return main(["--output-dir", str(out), *extra])


def test_a_synthetic_set_folder_holding_other_files_is_refused_and_kept(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.png").write_bytes(b"a user's picture")
    with pytest.raises(InputError, match="never deletes them"):
        prepare_synthetic_set(folder, TINY_SET, progress=False)
    assert [p.name for p in folder.iterdir()] == ["holiday.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-drawn folder left beside it


def test_a_drawn_set_is_reused_replaced_for_another_spec_and_then_guarded(tmp_path):
    folder = prepare_synthetic_set(tmp_path / "set", TINY_SET, progress=False)
    first = sorted(p.name for p in folder.iterdir())
    stamp = (folder / "manifest.csv").stat().st_mtime_ns
    assert prepare_synthetic_set(folder, TINY_SET, progress=False) == folder
    assert (folder / "manifest.csv").stat().st_mtime_ns == stamp  # reused, not redrawn
    bigger = SyntheticSetSpec(num_identities=3, kinds=("blur",), severities=(0, 1))
    prepare_synthetic_set(folder, bigger, progress=False)  # our own set of another spec: replaced
    assert len(list(folder.glob("*.png"))) == bigger.size and set(first) != set(p.name for p in folder.iterdir())
    (folder / "added_by_user.png").write_bytes(b"x")
    with pytest.raises(InputError, match="added_by_user.png"):
        prepare_synthetic_set(folder, TINY_SET, progress=False)
    assert (folder / "added_by_user.png").read_bytes() == b"x" and len(list(folder.glob("*.png"))) == bigger.size + 1
    (folder / "added_by_user.png").unlink()
    (folder / LOG_FOLDER / "notes.txt").write_text("mine")  # a file of the user's in the set's state folder ...
    drawn = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    with pytest.raises(InputError, match=f"{LOG_FOLDER}/notes.txt"):  # ... refused before anything is deleted
        prepare_synthetic_set(folder, TINY_SET, progress=False)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == drawn
    assert (folder / LOG_FOLDER / "notes.txt").read_text() == "mine"


def test_the_benchmark_never_deletes_a_data_folder_or_overwrites_an_output(tmp_path, tiny_weights):
    from grafiqs.experiments.benchmark import load_config, run_benchmark

    data_folder = tmp_path / "mine"
    data_folder.mkdir()
    (data_folder / "face.png").write_bytes(b"keep me")
    config = tmp_path / "a.yaml"
    config.write_text(f"output_dir: {tmp_path / 'out'}\nmodels: [{{name: tiny, weights: {tiny_weights}}}]\n"
                      f"sets: [{{name: s, kind: synthetic, folder: {data_folder}}}]\nwandb: {{mode: disabled}}\n")
    with pytest.raises(InputError, match="never deletes them"):
        run_benchmark(load_config(config))
    assert (data_folder / "face.png").read_bytes() == b"keep me"
    (tmp_path / "other" / "tables").mkdir(parents=True)
    (tmp_path / "other" / "tables.md").write_text("someone's table")
    (tmp_path / "other" / "tables" / "tiny_fmr1e-3_discard0.3_pauc_norm.csv").write_text("someone's numbers")
    with pytest.raises(InputError, match="not written by this program"):
        run_benchmark(load_config(config, ["--output_dir", str(tmp_path / "other")]))
    assert (tmp_path / "other" / "tables.md").read_text() == "someone's table"
    assert (tmp_path / "other" / "tables" / "tiny_fmr1e-3_discard0.3_pauc_norm.csv").read_text() == "someone's numbers"


def test_foreign_files_in_the_output_folder_are_never_overwritten(tmp_path, tiny_weights, faces, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "scores.csv").write_text("my own spreadsheet")
    (out / "notes.txt").write_text("unrelated")
    assert score(faces, out, tiny_weights) == 2
    assert "already holds scores.csv, not written by this program" in capsys.readouterr().err
    assert (out / "scores.csv").read_text() == "my own spreadsheet" and not (out / LOG_FOLDER).exists()
    (out / "scores.csv").unlink()
    assert score(faces, out, tiny_weights) == 0  # unrelated files may stay beside the outputs
    assert (out / "notes.txt").read_text() == "unrelated"
    assert score(faces, out, tiny_weights) == 0  # our own files are ours to replace
    mode = stat.S_IMODE((out / "scores.csv").stat().st_mode)
    assert mode == 0o666 & ~_umask(), oct(mode)  # the user's umask, not tempfile's private 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------ hostile folders: no hang, every file named


def test_a_hostile_folder_ends_on_its_own_scores_the_good_crops_and_names_every_bad_file(tmp_path, tiny_weights):
    folder = tmp_path / "hostile"
    folder.mkdir()
    good = {name: (GOLDEN / "images" / name).read_bytes() for name in ("clean.png", "dark.png")}
    for name, data in good.items():
        (folder / name).write_bytes(data)
    os.mkfifo(folder / "fifo.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    Image.new("L", (13500, 13500)).save(folder / "bomb.png")  # ~180 MB of pixels in a small file
    latin1 = os.fsencode(folder) + b"/caf\xe9.png"  # a Latin-1 file name: not UTF-8
    with open(latin1, "wb") as file:
        file.write(good["clean.png"])
    controls = ["line\nbreak.png", "carriage\rreturn.png", "file\x1cseparator.png", "line\u2028separator.png"]
    for name in controls:
        (folder / name).write_bytes(good["clean.png"])
    out = tmp_path / "out"
    done = run_script("--image-path", folder, "--weights", tiny_weights, "--output-dir", out, "--num-workers", 1,
                      timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    for group in GROUPS:  # every score file reads back, one entry per scored image
        assert sorted(read_score_file(out / f"GraFIQs_{group}.txt")) == sorted(str(folder / n) for n in good)
    assert len(read_csv(out / "scores.csv")) == len(good)
    reasons = {row["path"]: row["reason"] for row in read_csv(out / "errors.csv")}
    expected = {"fifo.png": "a FIFO", "zero.png": "a character device", "bomb.png": "pixels",
                "caf\\xe9.png": "not valid UTF-8", "line\\nbreak.png": "U+000A", "carriage\\rreturn.png": "U+000D",
                "file\\x1cseparator.png": "U+001C", "line\\u2028separator.png": "U+2028"}
    assert len(reasons) == len(expected)
    for name, why in expected.items():
        assert why in reasons[f"{folder}/{name}"], (name, reasons)


def test_control_and_non_utf8_names_are_the_only_ones_refused_and_every_kept_name_round_trips(tmp_path):
    kept = ["plain.png", "with space.png", "tab-free ünïcödé 顔.png", "trailing space .png", "x\u200bzero-width.png"]
    refused = ["a\nb.png", "a\rb.png", "a\x1cb.png", "a\x85b.png", "a\u2028b.png", "a\u2029b.png", "a\tb.png",
               os.fsdecode(b"caf\xe9.png")]
    assert [name_problem(n) for n in kept] == [None] * len(kept)
    assert all(name_problem(n) for n in refused)
    write_score_file(tmp_path / "s.txt", [(n, i / 7) for i, n in enumerate(kept)])
    assert read_score_file(tmp_path / "s.txt") == {n: i / 7 for i, n in enumerate(kept)}
    assert printable_path(os.fsdecode(b"caf\xe9\n.png")) == "caf\\xe9\\n.png"


def test_a_jpeg_with_bytes_after_its_end_marker_decodes_as_opencv_does_and_a_cut_one_is_refused():
    image = cv2.imread(str(GOLDEN / "images" / "clean.png"))
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    trailing = jpeg + b"\x00" * 100 + b"appended by a camera or a messenger app"
    np.testing.assert_array_equal(decode_image(trailing), cv2.imdecode(np.frombuffer(trailing, np.uint8), cv2.IMREAD_COLOR))
    progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert decode_image(progressive + b"tail").shape == (112, 112, 3)
    from grafiqs.errors import ImageError

    for cut in (jpeg[:-2], jpeg[: len(jpeg) // 2], progressive[: len(progressive) // 2]):
        with pytest.raises(ImageError, match="truncated JPEG"):
            decode_image(cut)


@pytest.mark.parametrize("stop, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_stop_with_a_message_keep_finished_batches_and_the_rerun_resumes(tmp_path, tiny_weights,
                                                                                             stop, code):
    folder = tmp_path / "many"
    folder.mkdir()
    crop = (GOLDEN / "images" / "clean.png").read_bytes()
    for i in range(200):
        (folder / f"face_{i:04d}.png").write_bytes(crop)
    out = tmp_path / "out"
    command = [sys.executable, "score.py", "--image-path", str(folder), "--weights", str(tiny_weights),
               "--output-dir", str(out), "--batch-size", "1", "--num-workers", "1", "--compile", "off"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(logged_records(out)) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(stop)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err[-2000:]
    assert f"stopped by {stop.name}" in err and "rerun the same command to resume" in err
    kept = len({r["path"] for r in logged_records(out)})
    assert 3 <= kept < 200
    resumed = run_script(*command[2:], "--batch-size", 50)  # batch size is no setting of the results
    assert resumed.returncode == 0 and f"resuming: {kept} of 200 images already scored" in resumed.stdout
    assert len(read_score_file(out / "GraFIQs_image.txt")) == 200


# ------------------------------------------------------------------ results of other weights, files or settings


def test_weights_replaced_at_the_same_path_are_never_mixed_with_the_old_scores(tmp_path, faces, capsys):
    weights = tmp_path / "backbone.pth"
    torch.save(tiny_iresnet().state_dict(), weights)
    assert score(faces, tmp_path / "out", weights) == 0
    retrained = tiny_iresnet()
    with torch.no_grad():
        retrained.layer1[0].conv1.weight.mul_(1.5)
    torch.save(retrained.state_dict(), weights)  # same path, new content
    assert score(faces, tmp_path / "out", weights) == 2
    assert "other settings (weights_sha256)" in capsys.readouterr().err
    assert score(faces, tmp_path / "out", weights, "--overwrite") == 0
    assert score(faces, tmp_path / "fresh", weights) == 0
    assert (tmp_path / "out" / "scores.csv").read_text() == (tmp_path / "fresh" / "scores.csv").read_text()


def test_an_image_replaced_under_the_same_name_is_scored_again(tmp_path, tiny_weights, faces, capsys):
    assert score(faces, tmp_path / "out", tiny_weights) == 0
    before = read_score_file(tmp_path / "out" / "GraFIQs_image.txt")
    info = (faces / "clean.png").stat()
    replacement = (GOLDEN / "images" / "blur_3.png").read_bytes()
    (faces / "clean.png").write_bytes(replacement[:info.st_size].ljust(info.st_size, b"\0"))  # same size ...
    os.utime(faces / "clean.png", ns=(info.st_atime_ns, info.st_mtime_ns))  # ... and the same mtime
    assert score(faces, tmp_path / "out", tiny_weights) == 0
    assert f"resuming: {len(FACES) - 1} of {len(FACES)}" in capsys.readouterr().out
    (faces / "clean.png").write_bytes(replacement)
    assert score(faces, tmp_path / "out", tiny_weights) == 0
    assert f"resuming: {len(FACES) - 1} of {len(FACES)}" in capsys.readouterr().out
    after = read_score_file(tmp_path / "out" / "GraFIQs_image.txt")
    assert after[str(faces / "clean.png")] == pytest.approx(before[str(faces / "blur_3.png")], rel=1e-5)


def test_overwrite_discards_every_earlier_result_and_leaves_no_stale_file(tmp_path, tiny_weights, faces):
    out = tmp_path / "out"
    assert score(faces, out, tiny_weights, "--save-embeddings") == 0
    assert (out / "embeddings.npy").exists()
    assert score(faces, out, tiny_weights, "--overwrite") == 0
    assert not (out / "embeddings.npy").exists()  # it would no longer match scores.csv
    assert len(logged_records(out)) == len(FACES)  # same settings, but --overwrite scored everything anew
    assert score(faces, out, tiny_weights, "--save-embeddings") == 0  # embeddings were not logged: rescored
    assert np.load(out / "embeddings.npy").shape[0] == len(FACES)


def test_an_unreadable_settings_file_or_broken_record_never_blocks_or_crashes(tmp_path, tiny_weights, faces, capsys):
    out = tmp_path / "out"
    assert score(faces, out, tiny_weights) == 0
    (out / LOG_FOLDER / "settings.json").write_text('{"image_pa')  # half-written
    assert score(faces, out, tiny_weights) == 2
    assert "settings.json is unreadable" in capsys.readouterr().err
    assert score(faces, out, tiny_weights, "--overwrite") == 0
    with open(out / LOG_FOLDER / "rank0.jsonl", "a") as log:  # valid JSON, but not a usable record
        log.write(json.dumps({"path": str(faces / "clean.png")}) + "\n")
        log.write(json.dumps({"path": str(faces / "dark.png"), "run": "x", "scores": {}}) + "\n")
    assert score(faces, out, tiny_weights) == 0
    assert len(read_score_file(out / "GraFIQs_image.txt")) == len(FACES)
    (out / LOG_FOLDER / "settings.json").write_text("")  # empty, and no log: a fresh start
    for log in (out / LOG_FOLDER).glob("rank*.jsonl"):
        log.unlink()
    assert score(faces, out, tiny_weights) == 0


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_holds_it(tmp_path, tiny_weights, faces, capsys):
    holder = subprocess.Popen(  # another process holds the folder, as a running score.py does
        [sys.executable, "-c", "import sys, time; from grafiqs.io.ledger import OutputFolder; "
         "OutputFolder(sys.argv[1]).claim({'scores.csv'}); print('held', flush=True); time.sleep(60)", tmp_path / "out"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert score(faces, tmp_path / "out", tiny_weights) == 2
        assert "another run is writing to" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ bad option values: one line, exit 2, nothing created


@pytest.mark.parametrize("option", [
    ["--backbone", "resnet50"], ["--accelerator", "cudaa"], ["--devices", "abc"], ["--devices", "0"],
    ["--batch-size", "0"], ["--num-workers", "-1"], ["--num-nodes", "0"], ["--image-path", ""],
    ["--quality-group", "block9"], ["--devices", "0,1", "--accelerator", "cpu"],
] + ([["--accelerator", "gpu"]] if not torch.cuda.is_available() else []))
def test_bad_option_values_are_one_line_errors_with_exit_2_and_create_nothing(tmp_path, tiny_weights, faces, option,
                                                                           capsys):
    from grafiqs.cli.score import main

    out = tmp_path / "out"
    arguments = ["--image-path", str(faces), "--weights", str(tiny_weights), "--output-dir", str(out)]
    if option[0] == "--image-path":
        arguments = arguments[2:]
    try:
        code = main(arguments + option)
    except SystemExit as exit:  # argparse's own checks
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0], err
    assert not out.exists()


def test_an_output_dir_that_is_a_file_says_so(tmp_path, tiny_weights, faces, capsys):
    (tmp_path / "out").write_text("a file")
    assert score(faces, tmp_path / "out", tiny_weights) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_path_replace_alone_is_ignored_as_in_the_official_script(tmp_path, tiny_weights, faces):
    assert score(faces, tmp_path / "out", tiny_weights, "--path-replace", str(faces)) == 0
    assert sorted(read_score_file(tmp_path / "out" / "GraFIQs_image.txt")) == sorted(str(faces / n) for n in FACES)


def test_a_hostile_ledger_or_manifest_can_name_nothing_outside_its_folder(tmp_path):
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep")
    digest = __import__("hashlib").sha256(b"keep").hexdigest()
    folder = OutputFolder(tmp_path / "out")
    folder.claim({"scores.csv"})
    with open(folder.ledger, "a") as ledger:
        for name in ("../victim.png", str(victim)):
            ledger.write(json.dumps({"name": name, "sha256": digest, "size": 4}) + "\n")
        ledger.write("\n")
    with pytest.raises(InputError, match="damaged"):
        folder.remove({"../victim.png", str(victim)})
    drawn = prepare_synthetic_set(tmp_path / "set", TINY_SET, progress=False)
    with open(drawn / "manifest.csv", "a") as manifest:  # the manifest is no proof: the set is no longer as drawn
        manifest.write("../victim.png,0,probe,none,0\n")
    with pytest.raises(InputError, match="manifest.csv"):
        prepare_synthetic_set(drawn, SyntheticSetSpec(num_identities=3, kinds=("blur",), severities=(0, 1)), progress=False)
    assert victim.read_bytes() == b"keep"


def test_a_users_folder_with_its_own_manifest_and_spec_is_never_taken_for_a_drawn_set(tmp_path):
    folder = prepare_synthetic_set(tmp_path / "drawn", TINY_SET, progress=False)
    mine = tmp_path / "photos"  # the user's photos with a manifest.csv (file column) and a spec.json of the same spec
    mine.mkdir()
    for path in folder.iterdir():
        if path.is_file():
            (mine / path.name).write_bytes(path.read_bytes())
    (mine / next(n for n in os.listdir(mine) if n.endswith(".png"))).write_bytes(b"a user's picture")
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    with pytest.raises(InputError, match="not a synthetic set drawn by this program"):
        prepare_synthetic_set(mine, SyntheticSetSpec(num_identities=3, kinds=("blur",), severities=(0, 1)), progress=False)
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before


def test_the_ledger_records_content_so_a_users_file_under_an_earlier_output_name_is_never_deleted(
        tmp_path, tiny_weights, faces, capsys):
    out = tmp_path / "out"
    assert score(faces, out, tiny_weights, "--save-embeddings") == 0
    np.save(out / "embeddings.npy", np.ones(3))  # the user's own file where a run wrote one
    mine = (out / "embeddings.npy").read_bytes()
    assert score(faces, out, tiny_weights) == 2  # a run without --save-embeddings would remove the old one
    assert "embeddings.npy, changed since this program wrote it" in capsys.readouterr().err
    assert (out / "embeddings.npy").read_bytes() == mine
    assert score(faces, out, tiny_weights, "--groups", "image") == 2  # refused: other settings ...
    (out / "scores.csv").write_text("my table")  # ... and the user writes a scores.csv in between
    assert score(faces, out, tiny_weights, "--overwrite") == 2
    assert "changed since this program wrote it" in capsys.readouterr().err
    assert (out / "scores.csv").read_text() == "my table" and (out / "embeddings.npy").read_bytes() == mine


def test_a_damaged_ledger_says_so_and_how_to_recover_even_with_overwrite(tmp_path, tiny_weights, faces, capsys):
    out = tmp_path / "out"
    assert score(faces, out, tiny_weights) == 0
    ledger = out / LOG_FOLDER / "written.jsonl"
    ledger.write_text("not json\n" + ledger.read_text())
    assert score(faces, out, tiny_weights, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and "delete its .grafiqs folder" in err and len(err.strip().splitlines()) == 1
    assert (out / "scores.csv").exists()
    ledger.write_text("")  # emptied: it says so, not that the files beside it are someone else's
    assert score(faces, out, tiny_weights, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "is damaged: it is empty" in err and "delete its .grafiqs folder" in err and "not written by" not in err
    assert (out / "scores.csv").exists()


def test_state_files_are_never_reached_through_a_link(tmp_path, tiny_weights, faces, capsys):
    out = tmp_path / "out"
    assert score(faces, out, tiny_weights) == 0
    target = tmp_path / "elsewhere.txt"
    target.write_text("untouched")
    log = out / LOG_FOLDER / "rank0.jsonl"
    log.unlink()
    log.symlink_to(target)
    (faces / "new.png").write_bytes((GOLDEN / "images" / "clean.png").read_bytes())
    assert score(faces, out, tiny_weights) == 2
    assert "symbolic link" in capsys.readouterr().err and target.read_text() == "untouched"


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "missing", "folder"])
def test_a_landmarks_file_that_is_not_a_regular_file_is_a_read_error_at_once(tmp_path, tiny_weights, faces, special,
                                                                            capsys):
    path = {"/dev/zero": Path("/dev/zero"), "folder": faces}.get(special, tmp_path / "landmarks.txt")
    if special == "fifo":
        os.mkfifo(path)
    assert score(faces, tmp_path / "out", tiny_weights, "--landmarks", path) == 2  # a FIFO must not hang
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "landmarks file" in err and "cannot write" not in err
    assert not (tmp_path / "out").exists()


def test_crops_saved_into_the_output_folder_never_become_inputs_and_never_collide(tmp_path, tiny_weights, faces):
    (faces / "clean.png.png").write_bytes((faces / "clean.png").read_bytes())
    (faces / "clean.jpg").write_bytes(cv2.imencode(".jpg", cv2.imread(str(faces / "clean.png")))[1].tobytes())
    (faces / "clean.jpg.png").write_bytes((faces / "blur_3.png").read_bytes())
    out = faces / "scored"  # output and crops inside the input tree, the same folder for both
    landmarks = tmp_path / "points.csv"
    points = "38.29,51.70,73.53,51.50,56.03,71.74,41.55,92.37,70.73,92.20"
    landmarks.write_text("path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5\n" + "".join(
        f"{n},{points}\n" for n in os.listdir(faces) if n != "scored"))
    for _ in range(2):
        assert score(faces, out, tiny_weights, "--recursive", "--landmarks", landmarks, "--save-aligned", out) == 0
    rows = read_csv(out / "scores.csv")
    assert sorted(Path(r["path"]).name for r in rows) == sorted(n for n in os.listdir(faces) if n != "scored")
    crops = sorted(p.name for p in out.glob("*.png"))
    assert {"clean.jpg.png", "clean.jpg.2.png"} <= set(crops) and len(crops) == len(rows)


POINTS = "38.29,51.70,73.53,51.50,56.03,71.74,41.55,92.37,70.73,92.20"


def landmarks_for(folder: Path, out: Path) -> Path:
    out.write_text("path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5\n" + "".join(f"{p.name},{POINTS}\n" for p in folder.iterdir()))
    return out


def test_the_programs_own_files_in_the_scored_folder_are_never_inputs(tmp_path, tiny_weights, faces):
    """--save-aligned or --output-dir naming the scored folder itself: the crops and the contact sheet the program
    wrote there are left out of every later run, flat and --recursive; the user's images there are all scored."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "photo.jpg").write_bytes(cv2.imencode(".jpg", cv2.imread(str(faces / "clean.png")))[1].tobytes())
    landmarks = landmarks_for(photos, tmp_path / "points.csv")
    for _ in range(2):
        assert score(photos, tmp_path / "out", tiny_weights, "--landmarks", landmarks, "--save-aligned", photos) == 0
        assert [Path(r["path"]).name for r in read_csv(tmp_path / "out" / "scores.csv")] == ["photo.jpg"]
    assert sorted(os.listdir(photos)) == [LOG_FOLDER, "photo.jpg", "photo.jpg.png"]
    for extra in (["--contact-sheet"], ["--recursive"]):
        out = tmp_path / extra[0].strip("-")
        shutil.copytree(faces, out)
        for _ in range(2):
            assert score(out, out, tiny_weights, *extra) == 0
            assert sorted(Path(r["path"]).name for r in read_csv(out / "scores.csv")) == sorted(FACES)


def test_a_crop_name_an_earlier_run_gave_is_never_given_to_another_image(tmp_path, tiny_weights, faces):
    """A resumed run keeps the crop names of the images scored before: `a.jpg` added beside `a.jpg.png` after the
    latter's crop was saved as `a.jpg.png` gets `a.jpg.2.png`, whatever the order of their names."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(faces / "blur_3.png", photos / "a.jpg.png")
    landmarks = tmp_path / "points.csv"
    landmarks.write_text(f"path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5\na.jpg.png,{POINTS}\na.jpg,{POINTS}\n")
    crops = tmp_path / "crops"
    assert score(photos, tmp_path / "out", tiny_weights, "--landmarks", landmarks, "--save-aligned", crops) == 0
    first = (crops / "a.jpg.png").read_bytes()
    (photos / "a.jpg").write_bytes(cv2.imencode(".jpg", cv2.imread(str(faces / "clean.png")))[1].tobytes())
    assert score(photos, tmp_path / "out", tiny_weights, "--landmarks", landmarks, "--save-aligned", crops) == 0
    assert sorted(p.name for p in crops.glob("*.png")) == ["a.jpg.2.png", "a.jpg.png"]
    assert (crops / "a.jpg.png").read_bytes() == first


def test_a_folder_named_like_an_image_and_an_unlistable_sub_folder_are_listed_with_the_reason(
        tmp_path, tiny_weights, faces):
    (faces / "album.png").mkdir()
    assert score(faces, tmp_path / "flat", tiny_weights) == 0
    assert any("album.png" in r["path"] and "folder" in r["reason"] for r in read_csv(tmp_path / "flat" / "errors.csv"))
    (faces / "album.png").rmdir()
    locked = faces / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as a user who reads every folder")
        assert score(faces, tmp_path / "deep", tiny_weights, "--recursive") == 0
        assert any("locked" in r["path"] and "locked: folder cannot be listed" in r["reason"]
                   for r in read_csv(tmp_path / "deep" / "errors.csv"))
    finally:
        locked.chmod(0o755)


def test_landmarks_for_another_image_size_are_not_scored_as_a_black_crop(tmp_path, tiny_weights, faces):
    landmarks = tmp_path / "points.csv"
    far = ",".join(str(4 * float(v)) for v in "38.29,51.70,73.53,51.50,56.03,71.74,41.55,92.37,70.73,92.20".split(","))
    landmarks.write_text(f"path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5\nclean.png,{far}\n")
    assert score(faces / "clean.png", tmp_path / "out", tiny_weights, "--landmarks", landmarks) == 5
    assert "outside the photo" in read_csv(tmp_path / "out" / "errors.csv")[0]["reason"]


def test_the_demo_checks_its_output_folder_before_drawing_and_gives_advice_that_works(tmp_path, monkeypatch, capsys):
    from grafiqs.cli.score import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "demo").mkdir(parents=True)
    (tmp_path / "outputs" / "demo" / "scores.csv").write_text("mine")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "the demo always writes to outputs/demo" in err and "images" not in os.listdir(tmp_path / "outputs" / "demo")
    assert os.listdir(tmp_path / "outputs") == ["demo"]
    (tmp_path / "outputs" / "demo" / "scores.csv").unlink()
    (tmp_path / "outputs" / "demo" / "images").mkdir()
    (tmp_path / "outputs" / "demo" / "images" / "holiday.png").write_bytes(b"a user's picture")
    assert main([]) == 2  # a user's photos where the demo draws: the advice is one that demo mode can follow
    err = capsys.readouterr().err
    assert "holiday.png" in err and "run the demo in another working folder" in err and "choose an empty" not in err
    assert os.listdir(tmp_path / "outputs" / "demo" / "images") == ["holiday.png"]


def test_sigterm_while_the_demo_draws_its_set_stops_with_a_message_and_leaves_nothing(tmp_path):
    demo = subprocess.Popen([sys.executable, str(ROOT / "score.py")], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert demo.stdout.readline().startswith("drawing")
    time.sleep(1)
    demo.send_signal(signal.SIGTERM)
    _, err = demo.communicate(timeout=60)
    assert demo.returncode == 143 and "stopped by SIGTERM" in err and "Traceback" not in err
    assert os.listdir(tmp_path / "outputs" / "demo") == []  # no half-drawn hidden folder


@pytest.mark.parametrize("option", [["--batch-size", "99999999999999999999"], ["--output-dir", ""],
                                    ["--save-aligned", "", "--align"], ["--devices", "99999999999999999999"],
                                    ["--devices", "0,99999999999999999999"]])
def test_absurd_values_are_refused_before_anything_is_created(tmp_path, tiny_weights, faces, option, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from grafiqs.cli.score import main

    try:
        code = main(["--image-path", str(faces), "--weights", str(tiny_weights), *option])
    except SystemExit as stop:  # argparse's own one-line error
        code = stop.code
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == ["faces"]


def test_a_jpeg_with_corrupt_scan_data_is_named_not_scored(tmp_path, tiny_weights, faces):
    data = bytearray(cv2.imencode(".jpg", cv2.imread(str(faces / "clean.png")))[1].tobytes())
    data[len(data) // 2:len(data) // 2 + 40] = b"\xff\x00" * 20  # libjpeg repairs this and only warns on stderr
    (faces / "damaged.jpg").write_bytes(bytes(data))
    assert score(faces, tmp_path / "out", tiny_weights) == 0
    errors = read_csv(tmp_path / "out" / "errors.csv")
    assert [Path(r["path"]).name for r in errors] == ["damaged.jpg"] and "corrupt JPEG data" in errors[0]["reason"]


def test_a_crop_that_cannot_be_saved_skips_its_image_and_the_others_are_scored(tmp_path, tiny_weights, faces,
                                                                               monkeypatch):
    long_name = "x" * 251 + ".jpg"  # 255 bytes: the crop's name, long_name + ".png", is too long for the file system
    (faces / long_name).write_bytes(cv2.imencode(".jpg", cv2.imread(str(faces / "clean.png")))[1].tobytes())
    landmarks = tmp_path / "points.csv"
    points = "38.29,51.70,73.53,51.50,56.03,71.74,41.55,92.37,70.73,92.20"
    landmarks.write_text("path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5\n" + "".join(f"{n},{points}\n" for n in os.listdir(faces)))
    assert score(faces, tmp_path / "out", tiny_weights, "--landmarks", landmarks, "--save-aligned", tmp_path / "crops") == 0
    errors = read_csv(tmp_path / "out" / "errors.csv")
    assert len(errors) == 1 and "aligned crop cannot be saved" in errors[0]["reason"]
    assert len(read_csv(tmp_path / "out" / "scores.csv")) == len(FACES)

    from grafiqs.data import folders

    def disk_full_at_clean(path, data):  # the disk fills up when the crop of clean.png is written
        if "clean" in Path(path).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return atomic_write_bytes(path, data)

    monkeypatch.setattr(folders, "atomic_write_bytes", disk_full_at_clean)
    assert score(faces, tmp_path / "full", tiny_weights, "--landmarks", landmarks, "--save-aligned",
                 tmp_path / "crops_full") == 0
    errors = {Path(r["path"]).name: r["reason"] for r in read_csv(tmp_path / "full" / "errors.csv")}
    assert "No space left on device" in errors["clean.png"] and len(errors) == 2
    assert len(read_csv(tmp_path / "full" / "scores.csv")) == len(FACES) - 1
