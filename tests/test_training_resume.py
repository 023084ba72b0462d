"""Resuming train_fr.py runs: kill -9 mid-epoch under DDP, resume on another world size to a longer horizon, logger runs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from jsonargparse import Namespace

from grafiqs.lit.fr_module import FaceRecognitionModule, WarmupSchedule

ROOT = Path(__file__).parents[1]
ENV = dict(os.environ, WANDB_MODE="offline", NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1",
           PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))


class StepLog(L.Callback):
    """Test hook: per rank and step, the labels of the batch (= sample indices: one image per
    identity) and the LR it is trained with, appended to `folder/steps.rank<r>.jsonl`.
    With `pause_at_step`, every rank stops (sleeps) after that step, ready to be killed."""

    def __init__(self, folder: str, pause_at_step: int | None = None):
        self.folder, self.pause_at_step = Path(folder), pause_at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        record = {"step": trainer.global_step, "epoch": trainer.current_epoch, "labels": batch[1].tolist(),
                  "lr": trainer.optimizers[0].param_groups[0]["lr"]}
        with open(self.folder / f"steps.rank{trainer.global_rank}.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.pause_at_step:
            (self.folder / f"paused.rank{trainer.global_rank}").touch()
            time.sleep(600)


def tiny_config(folder: Path, devices: int, max_steps: int, every_n_train_steps: int, extra_callbacks=(), name="train.yaml",
                max_epochs: int | None = None, logger=False, **model) -> Path:
    """16 synthetic identities of one image each: a batch's labels name its samples."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto", "max_steps": max_steps,
            "max_epochs": max_epochs,
            "log_every_n_steps": 1, "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False,
            "default_root_dir": str(folder), "logger": logger,
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": str(folder / "checkpoints"), "every_n_train_steps": every_n_train_steps,
                               "save_top_k": 0, "save_last": True}},
                *extra_callbacks,
            ],
        },
        "model": {"arch": "custom", "layers": [1, 1, 1, 1], "widths": [8, 16, 32, 64], "num_features": 32, "s": 16.0,
                  "m2": 0.3, "lr": 0.1, "poly_power": 1.0, "log_images": 0, **model},
        "data": {"class_path": "grafiqs.lit.datamodules.SyntheticFacesDataModule",
                 "init_args": {"num_identities": 16, "images_per_identity": 1, "batch_size": 2, "num_workers": 0,
                               "val_identities": 0}},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


def train(config: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "train_fr.py", "fit", "--config", str(config), *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def steps_seen(folder: Path, rank: int) -> dict[int, dict]:
    """Step -> record; a step trained twice (after the kill, again on resume) keeps its last record."""
    lines = (folder / f"steps.rank{rank}.jsonl").read_text().splitlines()
    return {record["step"]: record for record in map(json.loads, lines)}


def step_log(folder: Path, pause_at_step: int | None = None) -> dict:
    init_args = {"folder": str(folder)} | ({} if pause_at_step is None else {"pause_at_step": pause_at_step})
    return {"class_path": "test_training_resume.StepLog", "init_args": init_args}


# --------------------------------------------------------------------------- kill -9 under DDP, then resume


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two-process (gloo) partial-FC runs of 10 steps, 4 per epoch: `uninterrupted`, and `killed`
    with SIGKILL after step 7 (last checkpoint: step 5, mid-epoch 1), then resumed from last.ckpt.
    max_epochs is set too: then Lightning builds the train loader before restoring the checkpoint.
    Finally `one_process` resumes the resumed run's last checkpoint on one process to 14 steps."""
    base = tmp_path_factory.mktemp("resume")
    configs = {}
    for run, folder, pause in (("uninterrupted", base / "uninterrupted", None), ("killed", base / "killed", 7),
                               ("resumed", base / "killed", None)):
        export = {"class_path": "grafiqs.lit.callbacks.ExportBackbone", "init_args": {"dirpath": str(folder)}}
        csv = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(folder)}}
        configs[run] = tiny_config(folder, devices=2, max_steps=10, max_epochs=3, every_n_train_steps=5, name=f"{run}.yaml",
                                   extra_callbacks=[step_log(folder, pause), export], logger=csv,
                                   head="partial_fc", warmup_epochs=0.5)
    train(configs["uninterrupted"])

    killed = base / "killed"
    process = subprocess.Popen([sys.executable, "train_fr.py", "fit", "--config", str(configs["killed"])], cwd=ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not all((killed / f"paused.rank{r}").exists() for r in (0, 1)):
            assert process.poll() is None, process.stderr.read().decode()[-4000:]
            assert time.monotonic() < deadline, "the run never reached step 7"
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # its whole process group: both ranks, nothing flushed
        process.wait()
    last = killed / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 5
    train(configs["resumed"], "--ckpt_path", str(last))

    one_process = tiny_config(base / "one_process", devices=1, max_steps=14, max_epochs=3, every_n_train_steps=2,
                              extra_callbacks=[step_log(base / "one_process")], head="partial_fc", warmup_epochs=0.5)
    train(one_process, "--ckpt_path", str(last))
    return base


def test_a_run_killed_mid_epoch_resumes_with_the_same_steps_samples_and_lr_curve(runs):
    for rank in (0, 1):
        reference = steps_seen(runs / "uninterrupted", rank)
        resumed = steps_seen(runs / "killed", rank)
        assert sorted(reference) == list(range(10)) and sorted(resumed) == list(range(10))
        assert resumed == reference  # same samples in the same batches, same epochs, same LR per step
    epoch_1 = [r["labels"] for rank in (0, 1) for r in steps_seen(runs / "uninterrupted", rank).values() if r["epoch"] == 1]
    assert sorted(label for batch in epoch_1 for label in batch) == list(range(16))  # one whole epoch, each sample once
    schedule = WarmupSchedule(2, 10, "poly", power=1.0)  # warm-up: 0.5 epoch of 4 steps
    lrs = [record["lr"] for _, record in sorted(steps_seen(runs / "killed", 0).items())]
    assert lrs == pytest.approx([0.1 * schedule(step) for step in range(10)])


def test_the_resumed_partial_fc_run_ends_in_the_same_model(runs):
    from grafiqs.models.loading import load_backbone

    final = {name: torch.load(runs / name / "grafiqs.ckpt", weights_only=True) for name in ("uninterrupted", "killed")}
    assert final["killed"]["global_step"] == final["uninterrupted"]["global_step"] == 10
    reference, resumed = final["uninterrupted"]["state_dict"], final["killed"]["state_dict"]
    assert reference["head.weight"].shape == (16, 32)  # both ranks' shards, gathered
    assert reference.keys() == resumed.keys()
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=1e-5, atol=1e-6, msg=key)
    reloaded = FaceRecognitionModule.load_from_checkpoint(runs / "killed" / "grafiqs.ckpt", map_location="cpu", weights_only=True)
    assert torch.equal(reloaded.head.weight.detach(), resumed["head.weight"])  # one process: the whole matrix
    exported = torch.load(runs / "killed" / "backbone.ckpt", weights_only=True)
    assert not any(key.startswith("head.") for key in exported["state_dict"])  # the exported backbone needs no head
    load_backbone(None, runs / "killed" / "backbone.ckpt")


def test_the_resumed_run_logs_into_the_same_logger_run_with_the_whole_config(runs):
    assert [p.name for p in (runs / "killed" / "lightning_logs").iterdir()] == ["version_0"]
    hparams = yaml.safe_load((runs / "uninterrupted" / "lightning_logs" / "version_0" / "hparams.yaml").read_text())
    assert hparams["trainer"]["devices"] == 2 and hparams["trainer"]["strategy"] == "ddp" and "precision" in hparams["trainer"]
    assert hparams["data"]["init_args"]["batch_size"] == 2 and hparams["lr"] == 0.1 and hparams["head"] == "partial_fc"


def test_a_two_process_checkpoint_resumes_on_one_process_to_a_longer_horizon(runs):
    assert torch.load(runs / "one_process" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 14
    lrs = {step: record["lr"] for step, record in steps_seen(runs / "one_process", 0).items()}
    assert sorted(lrs) == [10, 11, 12, 13]
    schedule = WarmupSchedule(4, 14, "poly", power=1.0)  # one process: 8 steps per epoch, warm-up 4
    assert [lrs[s] for s in range(10, 14)] == pytest.approx([0.1 * schedule(s) for s in range(10, 14)])  # not 0: new horizon


def test_the_wandb_run_id_in_a_checkpoint_becomes_the_loggers_version(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    from train_fr import resume_logger_runs

    torch.save({"grafiqs_run": {"logger_versions": ["abc123", 3]}}, tmp_path / "last.ckpt")
    wandb = Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=Namespace(offline=True, version=None, id=None))
    pinned = Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(version=7))
    config = Namespace(trainer=Namespace(logger=[wandb, pinned]))
    resume_logger_runs(config, str(tmp_path / "last.ckpt"))
    assert wandb.init_args.version == "abc123" and pinned.init_args.version == 7  # a version given by the user wins
    assert WandbLogger(offline=True, save_dir=str(tmp_path), version="abc123")._wandb_init["id"] == "abc123"
