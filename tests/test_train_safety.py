"""train_fr.py never overwrites the user's files, refuses bad checkpoints and configs in one line, and resumes exactly.

Tiny in-process runs (tests/test_training_resume.py's `tiny_config`: 16 synthetic identities of one image
each, batches of 2, so 8 steps per epoch and a batch's labels name its samples).
"""
import json
import os
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

import train_fr
from grafiqs.lit.fr_module import resume_between_batches
from conftest import no_hang
from test_training_resume import tiny_config

EXPORT = {"class_path": "grafiqs.lit.callbacks.ExportBackbone"}


class SampleLog(L.Callback):
    """Test hook: per step, the epoch, the labels (= sample indices) and the LR, appended to `folder/samples.jsonl`;
    with `crash_at_step`, the run dies with an exception at that step, before any end-of-run hook."""

    def __init__(self, folder: str, crash_at_step: int | None = None):
        self.folder, self.crash_at_step = Path(folder), crash_at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.crash_at_step:
            raise RuntimeError("simulated crash")
        record = {"step": trainer.global_step, "epoch": trainer.current_epoch, "labels": batch[1].tolist(),
                  "lr": trainer.optimizers[0].param_groups[0]["lr"]}
        with open(self.folder / "samples.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The runs here are in-process: one intra-op thread, as the subprocess runs have (OMP_NUM_THREADS=1); two
    threads fighting over a busy machine's cores make these tiny steps 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sample_log(folder: Path, crash_at_step: int | None = None) -> dict:
    return {"class_path": "test_train_safety.SampleLog", "init_args": {"folder": str(folder), "crash_at_step": crash_at_step}}


def samples(folder: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (folder / "samples.jsonl").read_text().splitlines())}


def fit(config: Path, *args: str) -> int:
    return train_fr.main(["fit", "--config", str(config), *args])


def error_line(capsys) -> str:
    """The one line train_fr.py printed on stderr: `error: ...`, no traceback, no usage."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(folder.rglob("*"))}


# --------------------------------------------------------------------------- the user's files are never replaced


@pytest.mark.parametrize("name", ["backbone.pth", "backbone.ckpt", "grafiqs.ckpt"])
def test_a_folder_holding_the_users_export_file_is_refused_before_anything_is_created(tmp_path, capsys, name):
    folder = tmp_path / "run"
    config = tiny_config(folder, devices=1, max_steps=2, every_n_train_steps=1, extra_callbacks=[EXPORT])
    (folder / name).write_bytes(b"the user's own weights")
    before = listing(folder)
    with no_hang(60):
        assert fit(config) == 2
    line = error_line(capsys)
    assert str(folder) in line and name in line and "not written by this program" in line
    assert listing(folder) == before  # no .grafiqs/, no checkpoints/, no config.yaml: nothing created, nothing changed


def test_a_finished_run_replaces_its_own_exports_and_keeps_the_users_config_yaml(tmp_path, capsys):
    folder = tmp_path / "run"
    config = tiny_config(folder, devices=1, max_steps=2, every_n_train_steps=1, extra_callbacks=[EXPORT])
    (folder / "config.yaml").write_text("mine: true\n")
    assert fit(config) == 0
    assert "config.yaml is not a file this program wrote" in capsys.readouterr().err
    assert (folder / "config.yaml").read_text() == "mine: true\n"
    assert yaml.safe_load((folder / "config-1.yaml").read_text())["trainer"]["max_steps"] == 2
    first = (folder / "backbone.pth").read_bytes()

    assert fit(config, "--trainer.max_steps=3") == 0  # the same folder again: the files are the program's own now
    assert torch.load(folder / "grafiqs.ckpt", weights_only=True)["global_step"] == 3
    assert (folder / "backbone.pth").read_bytes() != first
    assert yaml.safe_load((folder / "config-1.yaml").read_text())["trainer"]["max_steps"] == 3
    assert not (folder / "config-2.yaml").exists() and (folder / "config.yaml").read_text() == "mine: true\n"
    ledger = [json.loads(line)["name"] for line in (folder / ".grafiqs" / "written.jsonl").read_text().splitlines()]
    assert {"backbone.pth", "backbone.ckpt", "grafiqs.ckpt", "config-1.yaml"} <= set(ledger)
    assert "config.yaml" not in ledger


def test_a_users_last_ckpt_where_the_checkpoints_go_is_never_replaced(tmp_path, capsys):
    """ModelCheckpoint's folder follows the ledger too: someone else's last.ckpt there refuses the run before anything
    is created; a checkpoint of an earlier run without a ledger is adopted when resumed from, and replaced by the
    continuation; one changed since the program wrote it is refused again."""
    folder = tmp_path / "run"
    config = tiny_config(folder, devices=1, max_steps=2, every_n_train_steps=1, extra_callbacks=[EXPORT])
    last = folder / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"the user's own checkpoint")
    before = listing(folder)
    with no_hang(60):
        assert fit(config) == 2
    line = error_line(capsys)
    assert str(last.parent) in line and "last.ckpt, not written by this program" in line
    assert listing(folder) == before  # nothing created, the user's file as it was

    last.unlink()
    assert fit(config) == 0
    shutil.rmtree(last.parent / ".grafiqs")  # as an earlier version of the program left it: no ledger
    assert fit(config, "--ckpt_path", str(last), "--trainer.max_steps=4") == 0
    assert torch.load(last, weights_only=True)["global_step"] == 4
    with open(last, "ab") as file:
        file.write(b"edited")
    capsys.readouterr()
    assert fit(config, "--trainer.max_steps=6") == 2
    assert "last.ckpt, changed since this program wrote it" in capsys.readouterr().err
    assert last.read_bytes().endswith(b"edited")


# --------------------------------------------------------------------------- bad --ckpt_path and --config in one line


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 2-step run: its last.ckpt, backbone.pth and backbone.ckpt, and its config (train.yaml)."""
    folder = tmp_path_factory.mktemp("trained")
    assert fit(tiny_config(folder, devices=1, max_steps=2, every_n_train_steps=1, extra_callbacks=[EXPORT])) == 0
    return folder


def truncated(folder: Path, out: Path) -> Path:
    out.write_bytes((folder / "checkpoints" / "last.ckpt").read_bytes()[:4000])
    return out


def fifo(folder: Path, out: Path) -> Path:
    os.mkfifo(out)
    return out


CHECKPOINTS = {  # case -> (make the file, extra options, what the error line says)
    "missing": (lambda folder, out: out, [], "not found"),
    "truncated": (truncated, [], "is truncated or damaged"),
    "fifo": (fifo, [], "not a regular file (a FIFO)"),
    "folder": (lambda folder, out: folder, [], "not a regular file (a folder)"),
    "backbone.pth": (lambda folder, out: folder / "backbone.pth", [], "is a plain state dict of weights"),
    "backbone.ckpt": (lambda folder, out: folder / "backbone.ckpt", [], "without the training state"),
    "architecture": (lambda folder, out: folder / "checkpoints" / "last.ckpt", ["--model.widths=[4,8,16,32]"],
                     "the checkpoint's backbone has blocks per stage [1, 1, 1, 1], widths [8, 16, 32, 64], 32 features"),
    "classes": (lambda folder, out: folder / "checkpoints" / "last.ckpt", ["--data.init_args.num_identities=20"],
                "was trained on 16 classes (identities); this run's training data has 20"),
}


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_an_unusable_ckpt_path_is_refused_in_one_line_naming_it(trained, tmp_path, capsys, case):
    make, options, says = CHECKPOINTS[case]
    path = make(trained, tmp_path / f"{case}.ckpt")
    folder = tmp_path / "resumed"
    config = tiny_config(folder, devices=1, max_steps=4, every_n_train_steps=1, extra_callbacks=[EXPORT])
    before = listing(folder)
    with no_hang(60):
        assert fit(config, "--ckpt_path", str(path), *options) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]  # Lightning's "Seed set to 0" may come first
    assert line.startswith("error: ") and str(path) in line and says in line, line
    assert listing(folder) == before


def test_a_fifo_config_is_refused_instead_of_blocking(tmp_path, capsys):
    os.mkfifo(tmp_path / "config.yaml")
    with no_hang(60):
        assert train_fr.main(["fit", "--config", str(tmp_path / "config.yaml")]) == 2
    assert error_line(capsys) == f"error: cannot read --config file {tmp_path / 'config.yaml'}: not a regular file (a FIFO)"


@pytest.mark.parametrize("where", ["command line", "config file"])
def test_a_typo_in_a_key_prints_the_error_and_the_help_hint_only(tmp_path, capsys, where):
    config = tiny_config(tmp_path, devices=1, max_steps=2, every_n_train_steps=1)
    if where == "command line":
        status = fit(config, "--trainer.max_stpes=3")
    else:
        (tmp_path / "typo.yaml").write_text("trainer:\n  max_stpes: 3\n")
        status = fit(config, "--config", str(tmp_path / "typo.yaml"))
    line = error_line(capsys)
    assert status == 2 and "trainer.max_stpes" in line and line.endswith("(`python train_fr.py fit --help` lists every option)")


# --------------------------------------------------------------------------- last.ckpt and exact resumes


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """`reference`: 16 steps (2 epochs) uninterrupted. `first8`: the same run stopped by max_steps at the end of
    epoch 0, `first4` in mid-epoch 0; their ModelCheckpoint saves every 3 steps, so Lightning alone would leave
    last.ckpt at step 6 and 3."""
    base = tmp_path_factory.mktemp("resume")
    for name, steps in (("reference", 16), ("first8", 8), ("first4", 4)):
        (base / name).mkdir()
        config = tiny_config(base / name, devices=1, max_steps=steps, every_n_train_steps=3,
                             extra_callbacks=[sample_log(base / name)])
        assert fit(config) == 0
    return base


def test_last_ckpt_is_written_at_the_end_of_fit_whatever_the_step_trigger(runs):
    for name, step in (("first8", 8), ("first4", 4), ("reference", 16)):
        assert torch.load(runs / name / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step


HORIZONS = {"max_steps": ["--trainer.max_steps=16"], "max_epochs": ["--trainer.max_steps=-1", "--trainer.max_epochs=2"],
            "both": ["--trainer.max_steps=16", "--trainer.max_epochs=2"]}


@pytest.mark.parametrize("first", ["first8", "first4"])
@pytest.mark.parametrize("horizon", list(HORIZONS))
def test_a_resumed_run_trains_exactly_the_samples_of_the_uninterrupted_run(runs, tmp_path, first, horizon):
    """Resumed from the end of epoch 0 (or from step 4 of it) to a longer horizon: every step the uninterrupted
    run trained after that point, with the same batch, epoch and learning rate; epoch 1 sees each sample once."""
    checkpoint = tmp_path / "last.ckpt"
    shutil.copy(runs / first / "checkpoints" / "last.ckpt", checkpoint)
    config = tiny_config(tmp_path, devices=1, max_steps=16, every_n_train_steps=100, extra_callbacks=[sample_log(tmp_path)])
    assert fit(config, "--ckpt_path", str(checkpoint), *HORIZONS[horizon]) == 0
    reference, resumed = samples(runs / "reference"), samples(tmp_path)
    start = int(first.removeprefix("first"))
    assert sorted(resumed) == list(range(start, 16))
    for step in resumed:
        assert resumed[step]["labels"] == reference[step]["labels"] and resumed[step]["epoch"] == reference[step]["epoch"]
        assert resumed[step]["lr"] == pytest.approx(reference[step]["lr"])
    epoch_1 = [label for record in resumed.values() if record["epoch"] == 1 for label in record["labels"]]
    assert sorted(epoch_1) == list(range(16))  # no sample skipped, none replayed


def test_a_run_killed_in_epoch_1_has_the_last_ckpt_of_epoch_0(tmp_path):
    config = tiny_config(tmp_path, devices=1, max_steps=16, every_n_train_steps=100,
                         extra_callbacks=[sample_log(tmp_path, crash_at_step=11)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(config)
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 8 and max(samples(tmp_path)) == 10  # its steps 9 and 10 are lost, not epoch 0


def test_a_checkpoint_saved_inside_a_batch_is_left_to_lightning():
    progress = {"ready": 3, "started": 3, "processed": 3, "completed": 2}
    fit_loop = {"epoch_progress": {"total": {"ready": 1, "started": 1, "processed": 0, "completed": 0},
                                   "current": {"ready": 1, "started": 1, "processed": 0, "completed": 0}},
                "epoch_loop.batch_progress": {"total": dict(progress), "current": dict(progress), "is_last_batch": False}}
    saved = json.dumps(fit_loop)
    assert resume_between_batches(fit_loop) is None and json.dumps(fit_loop) == saved
