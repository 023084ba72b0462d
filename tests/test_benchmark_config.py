"""benchmark.py / ablate.py refuse bad input up front with one `error:` line and the documented exit code:
every number of the config against its range, the --config file and every file it names as regular files,
each set's genuine and impostor pairs when it is loaded (before any pass), and an unwritable report (exit 4)."""
import os
import runpy
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import no_hang
from grafiqs.data.verification import write_bin_pairs
from grafiqs.errors import InputError, ReadError
from grafiqs.experiments.benchmark import load_config, main

ROOT = Path(__file__).resolve().parents[1]


def write_config(folder: Path, **changes) -> Path:
    config = {"output_dir": str(folder / "out"), "sets": [{"name": "s", "kind": "synthetic"}],
              "models": [{"name": "m", "weights": str(folder / "w.pth")}], "wandb": {"mode": "disabled"}}
    config.update(changes)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def one_error_line_of(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def one_error_line(capsys) -> str:
    return one_error_line_of(capsys.readouterr().err)


def synthetic(**spec) -> dict:
    return {"name": "s", "kind": "synthetic", "synthetic": spec}


# --------------------------------------------------------------------------- numbers, checked when the config is read


@pytest.mark.parametrize("change, message", [
    ({"batch_size": -3}, "batch_size must be a whole number from 1 to 65536, got -3"),
    ({"batch_size": 0}, "batch_size must be a whole number from 1"),
    ({"num_workers": -1}, "num_workers must be a whole number from 0 to 65536, got -1"),
    ({"devices": 0}, "devices must be a whole number from 1 to 65536, got 0"),
    ({"num_nodes": -2}, "num_nodes must be a whole number from 1"),
    ({"seed": -1}, "seed must be a whole number >= 0, got -1"),
    ({"sets": [synthetic(num_identities=-5)]}, r"set 's': synthetic.num_identities must be a whole number >= 2, got -5"),
    ({"sets": [synthetic(num_identities=1)]}, r"synthetic.num_identities must be a whole number >= 2, got 1"),
    ({"sets": [synthetic(probes_per_identity=0)]}, r"synthetic.probes_per_identity must be a whole number from 1"),
    ({"sets": [synthetic(seed=-4)]}, r"synthetic.seed must be a whole number >= 0"),
    ({"sets": [synthetic(identity_offset=-1)]}, r"synthetic.identity_offset must be a whole number >= 0"),
    ({"sets": [synthetic(severities=[0, 7])]}, r"synthetic.severities must be one or more of 0, 1, 2, 3"),
    ({"sets": [synthetic(kinds=["smudge"])]}, r"synthetic.kinds must name one or more of blur"),
    ({"sets": [synthetic(world="narrow")]}, r"synthetic.world must be one of standard, wide, got 'narrow'"),
    ({"sets": [synthetic(severities=[0, 1], severity_weights=[1.0, -1.0])]}, r"synthetic.severity_weights"),
    ({"sets": [{"name": "a", "kind": "identity_folder", "folder": "x", "max_pairs": 0}]},
     r"set 'a': max_pairs must be a whole number >= 1, got 0"),
    ({"sets": [{"name": "l", "kind": "lfw", "images": "x"}]}, "set l: kind lfw needs pairs"),
    ({"evaluation": {"fmrs": [1.0e3]}}, r"evaluation.fmrs must lie in \(0, 1\), got 1000.0"),
    ({"evaluation": {"fmrs": [0.001, 1.0]}}, r"evaluation.fmrs must lie in \(0, 1\), got 1.0"),
    ({"evaluation": {"fmrs": [0.0]}}, r"evaluation.fmrs must lie in \(0, 1\)"),
    ({"evaluation": {"fmrs": []}}, "evaluation.fmrs is empty"),
    ({"evaluation": {"limits": [0.0]}}, r"evaluation.limits must lie in \(0, 1\], got 0.0"),
    ({"evaluation": {"limits": [0.3, 1.5]}}, r"evaluation.limits must lie in \(0, 1\], got 1.5"),
    ({"evaluation": {"metrics": []}}, "evaluation.metrics is empty"),
    ({"evaluation": {"plot_top": -1}}, "evaluation.plot_top must be a whole number >= 0"),
    ({"methods": {"grafiqs": {"param_chunk_size": 0}}}, "methods.grafiqs.param_chunk_size must be a whole number from 1"),
    ({"methods": {"serfiq": {"passes": 1}}}, "at least 2 passes"),
    ({"methods": {"faceqan": {"copies": 0}}}, "FaceQAN needs copies >= 2"),
])
def test_every_number_is_checked_when_the_config_is_read(tmp_path, change, message):
    path = write_config(tmp_path, **change)
    with pytest.raises(InputError, match=message):
        load_config(path)
    assert not (tmp_path / "out").exists()


def test_limits_of_one_and_valid_numbers_are_accepted(tmp_path):
    config = load_config(write_config(tmp_path, batch_size=1, num_workers=0, evaluation={"fmrs": [1e-6, 0.5],
                                                                                          "limits": [0.2, 1.0]}))
    assert config.evaluation.limits == [0.2, 1.0] and config.batch_size == 1


@pytest.mark.parametrize("argv, message", [
    (["--batch_size", "-3"], "error: batch_size must be a whole number from 1 to 65536, got -3"),
    (["--evaluation.fmrs", "[1.0e3]"], r"error: evaluation.fmrs must lie in (0, 1), got 1000.0"),
])
@pytest.mark.parametrize("prog", ["benchmark.py", "ablate.py"])
def test_a_bad_number_is_one_error_line_and_exit_2(tmp_path, capsys, argv, message, prog):
    path = write_config(tmp_path)
    assert main(["--config", str(path), *argv], prog=prog) == 2
    assert one_error_line(capsys) == message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", ["benchmark.py", "ablate.py"])
def test_the_scripts_exit_2_on_a_bad_config(tmp_path, capsys, monkeypatch, script):
    path = write_config(tmp_path, sets=[synthetic(num_identities=-5)])
    monkeypatch.setattr(sys, "argv", [script, "--config", str(path)])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    assert stopped.value.code == 2
    assert "synthetic.num_identities must be a whole number >= 2, got -5" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- files: regular, checked before use


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "missing"])
def test_the_config_file_is_checked_before_it_is_read(tmp_path, capsys, kind):
    path = {"fifo": tmp_path / "config.yaml", "device": Path("/dev/zero"), "folder": tmp_path,
            "missing": tmp_path / "nope.yaml"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    with no_hang():
        assert main(["--config", str(path)]) == 2
    line = one_error_line(capsys)
    expected = {"fifo": "not a regular file (a FIFO)", "device": "not a regular file (a character device)",
                "folder": "not a regular file (a folder)", "missing": "benchmark config not found"}[kind]
    assert expected in line and str(path) in line
    with no_hang(), pytest.raises(ReadError, match="benchmark config"):
        load_config(path)


def test_an_inline_config_is_still_read(tmp_path):
    config = load_config(overrides=["--config", "{output_dir: o, sets: [{name: s, kind: synthetic}], "
                                                "models: [{name: m, weights: w}]}"])
    assert config.output_dir == "o"


def _special(path: Path, kind: str) -> str:
    if kind == "fifo":
        os.mkfifo(path)
        return str(path)
    return "/dev/zero"


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("named", ["weights", "bin", "lfw_pairs", "pair_list", "ijbc_protocol", "landmarks", "external"])
def test_every_file_the_config_names_is_checked_before_anything_runs(tmp_path, capsys, named, kind):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not read: the check comes first")
    special = _special(tmp_path / "special", kind)
    sets = [{"name": "s", "kind": "synthetic"}]
    models = [{"name": "m", "weights": str(weights)}]
    external = []
    meta = tmp_path / "meta"
    meta.mkdir()
    for name in ("ijbc_face_tid_mid.txt", "ijbc_template_pair_label.txt", "ijbc_name_5pts_score.txt"):
        (meta / name).write_text("x\n")
    if named == "weights":
        models = [{"name": "m", "weights": special}]
    elif named == "bin":
        sets = [{"name": "b", "kind": "bin", "path": special}]
    elif named == "lfw_pairs":
        sets = [{"name": "l", "kind": "lfw", "pairs": special, "images": str(tmp_path)}]
    elif named == "pair_list":
        (tmp_path / "crfiqa").mkdir()
        if kind == "fifo":
            os.mkfifo(tmp_path / "crfiqa" / "pair_list.txt")
        else:
            os.symlink("/dev/zero", tmp_path / "crfiqa" / "pair_list.txt")
        sets = [{"name": "p", "kind": "pair_list", "dir": str(tmp_path / "crfiqa")}]
    elif named == "ijbc_protocol":
        (meta / "ijbc_template_pair_label.txt").unlink()
        if kind == "fifo":
            os.mkfifo(meta / "ijbc_template_pair_label.txt")
        else:
            os.symlink("/dev/zero", meta / "ijbc_template_pair_label.txt")
        sets = [{"name": "i", "kind": "ijbc", "meta": str(meta), "images": str(tmp_path)}]
    elif named == "landmarks":
        sets = [{"name": "i", "kind": "ijbc", "meta": str(meta), "images": str(tmp_path), "landmarks": special}]
    else:
        external = [{"name": "X", "set": "s", "path": special, "orientation": "higher_is_better"}]
    path = write_config(tmp_path, sets=sets, models=models, methods={"external": external})
    with no_hang():
        assert main(["--config", str(path)]) == 2
    line = one_error_line(capsys)
    assert "not a regular file" in line, line
    assert not (tmp_path / "out").exists()


def test_a_missing_named_file_is_named_before_anything_is_created(tmp_path, capsys):
    path = write_config(tmp_path, sets=[{"name": "b", "kind": "bin", "path": str(tmp_path / "lfw.bin")}])
    (tmp_path / "w.pth").write_bytes(b"x")
    assert main(["--config", str(path)]) == 2
    assert one_error_line(capsys) == f"error: .bin pair file of set b not found: {tmp_path / 'lfw.bin'}"
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- pairs, checked when a set is loaded


def _images(folder: Path, names: list[str]) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))


@pytest.mark.parametrize("lacking", ["impostor", "genuine"])
@pytest.mark.parametrize("layout", ["pair_list", "bin", "xqlfw", "identity_folder"])
def test_a_set_without_genuine_or_impostor_pairs_is_named_before_any_pass(tmp_path, capsys, layout, lacking):
    (tmp_path / "w.pth").write_bytes(b"not read: the sets are checked first")
    flag = int(lacking == "impostor")  # the pairs given are all genuine (1) or all impostor (0)
    if layout == "pair_list":
        _images(tmp_path / "d" / "images", ["a.png", "b.png", "c.png"])
        source = tmp_path / "d" / "pair_list.txt"
        source.write_text(f"a.png b.png {flag}\nb.png c.png {flag}\n")
        spec = {"name": "P", "kind": "pair_list", "dir": str(tmp_path / "d")}
    elif layout == "bin":
        encoded = [cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()] * 4
        source = tmp_path / "toy.bin"
        write_bin_pairs(source, encoded, [bool(flag)] * 2)
        spec = {"name": "P", "kind": "bin", "path": str(source)}
    elif layout == "xqlfw":
        _images(tmp_path / "x", ["a/a_0001.jpg", "a/a_0002.jpg", "b/b_0001.jpg"])
        source = tmp_path / "xqlfw_pairs.txt"
        source.write_text("header\n" + ("a 1 2\n" if flag else "a 1 b 1\n"))
        spec = {"name": "P", "kind": "xqlfw", "pairs": str(source), "images": str(tmp_path / "x")}
    else:  # one identity: only genuine pairs; one image per identity: only impostor pairs
        source = tmp_path / "people"
        _images(source, ["id0/0.png", "id0/1.png"] if flag else ["id0/0.png", "id1/0.png"])
        spec = {"name": "P", "kind": "identity_folder", "folder": str(source)}
    path = write_config(tmp_path, sets=[spec])
    assert main(["--config", str(path)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: set P: ") and str(source) in line and f"no {lacking} pairs" in line, line
    assert not (tmp_path / "out").exists()  # nothing created, no pass run


# --------------------------------------------------------------------------- an unwritable report: exit 4, resumable


def test_an_unwritable_report_is_exit_4_and_the_same_command_resumes(tmp_path, capsys, tiny_weights):
    (tmp_path / "w.pth").symlink_to(tiny_weights)
    # 4 clean faces of 2 people (2 genuine, 2 impostor pairs), one embedding pass: the quickest real run
    path = write_config(tmp_path, sets=[synthetic(num_identities=2, kinds=["blur"], severities=[0])],
                        methods={"grafiqs": None}, evaluation={"fmrs": [0.1], "limits": [0.5], "crfiqa_erc": False},
                        batch_size=8, num_workers=0, accelerator="cpu")
    out = tmp_path / "out"
    out.mkdir()
    (out / "ranked").write_text("a file where the report's folder goes: its writes fail as on a read-only disk")
    assert main(["--config", str(path)]) == 4
    first = capsys.readouterr()
    line = one_error_line_of(first.err)
    assert line.startswith(f"error: cannot write {out / 'ranked'}") and "kept in" in line and \
        "rerun the same command to resume" in line, line
    assert "pass s / m / embedding" in first.out
    (out / "ranked").unlink()
    assert main(["--config", str(path)]) == 0
    second = capsys.readouterr()
    assert "pass s / m / embedding" not in second.out  # loaded from the cache, not computed again
    assert (out / "ranked" / "s__m.md").is_file() and (out / "summary.json").is_file()

