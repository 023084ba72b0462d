"""Face-recognition training: margin heads, verification metrics, data modules, exact BN recalibration, export."""
import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from grafiqs.data.recordio import write_recordio
from grafiqs.data.verification import write_bin_pairs
from grafiqs.errors import InputError
from grafiqs.lit.callbacks import BNRecalibration, ExportBackbone, batchnorm_layers
from grafiqs.lit.datamodules import (
    ImageFolderDataModule,
    ImageFolderFaces,
    RecordIODataModule,
    SyntheticFacesDataModule,
    build_augmentations,
)
from grafiqs.lit.fr_module import (
    FaceRecognitionModule,
    RunLengthLambdaLR,
    WarmupSchedule,
    best_threshold_accuracy,
    kfold_accuracy,
    tar_at_fmr,
)
from grafiqs.models.heads import ArcFaceHead, CosFaceHead, build_head
from grafiqs.models.margins import CombinedMarginHead, resolve_margins
from grafiqs.models.iresnet import IResNet
from grafiqs.models.loading import load_backbone, load_weights, read_checkpoint_metadata, read_state_dict

ROOT = Path(__file__).parents[1]
TINY = dict(arch="custom", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64], num_features=32)


# --------------------------------------------------------------------------- heads


def _unit_head(head_cls, **kwargs):
    """A 2-class head in 2-D whose class centres are the x and y axes."""
    head = head_cls(2, 2, **kwargs)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2) * 3.0)  # any length: the head normalises
    return head


def _at_angle(theta: float) -> torch.Tensor:
    return torch.tensor([[math.cos(theta), math.sin(theta)]]) * 7.0


def test_arcface_and_cosface_logits_match_the_formula_on_a_hand_case():
    theta = 0.3  # angle to class 0; to class 1 it is pi/2 - 0.3
    arc = _unit_head(ArcFaceHead, s=64.0, m=0.5)(_at_angle(theta), torch.tensor([0]))
    assert torch.allclose(arc, torch.tensor([[64 * math.cos(theta + 0.5), 64 * math.sin(theta)]]), atol=1e-4)
    cos = _unit_head(CosFaceHead, s=64.0, m=0.35)(_at_angle(theta), torch.tensor([0]))
    assert torch.allclose(cos, torch.tensor([[64 * (math.cos(theta) - 0.35), 64 * math.sin(theta)]]), atol=1e-4)
    combined = _unit_head(CombinedMarginHead, s=30.0, m1=1.2, m2=0.2, m3=0.1)(_at_angle(theta), torch.tensor([1]))
    other = math.pi / 2 - theta
    assert torch.allclose(combined, torch.tensor([[30 * math.cos(theta), 30 * (math.cos(1.2 * other + 0.2) - 0.1)]]), atol=1e-4)
    # without labels: plain scaled cosines
    plain = _unit_head(ArcFaceHead, s=64.0)(_at_angle(theta))
    assert torch.allclose(plain, torch.tensor([[64 * math.cos(theta), 64 * math.sin(theta)]]), atol=1e-4)


def test_margins_lower_the_target_logit_and_stay_monotonic_past_pi():
    torch.manual_seed(0)
    head = ArcFaceHead(16, 10, s=64.0, m=0.5)
    x, y = torch.randn(32, 16), torch.randint(0, 10, (32,))
    logits, plain = head(x, y), head(x)
    rows = torch.arange(32)
    assert (logits[rows, y] < plain[rows, y]).all()
    others = torch.ones_like(logits, dtype=torch.bool)
    others[rows, y] = False
    assert torch.equal(logits[others], plain[others])
    # insightface's fallback past theta = pi - m: cos(theta) - m * sin(m), decreasing in theta
    thetas = torch.linspace(0.0, math.pi, 2001)
    values = head.margin_cosine(torch.cos(thetas))
    assert (values[1:] <= values[:-1] + 1e-6).all() and torch.isfinite(values).all()
    beyond = 3.0
    assert math.isclose(float(head.margin_cosine(torch.tensor([math.cos(beyond)]))), math.cos(beyond) - 0.5 * math.sin(0.5), abs_tol=1e-5)
    # m1 > 1 (SphereFace-like): the fallback is continuous at the switch, still monotonic
    sphere = CombinedMarginHead(4, 3, m1=1.35, m2=0.0, m3=0.0)
    assert (sphere.margin_cosine(torch.cos(thetas)).diff() <= 1e-6).all()
    # gradients stay finite at cos = +-1
    cosines = torch.tensor([1.0, -1.0, 0.0], requires_grad=True)
    head.margin_cosine(cosines).sum().backward()
    assert torch.isfinite(cosines.grad).all()


def arcface_torch_logits(embeddings, weight, labels, s, m):
    """arcface_torch's published ArcFace (CombinedMarginLoss with m1=1, m3=0): cosines clamped to
    [-1, 1], the target entry replaced by cos(arccos(cos) + m) under no_grad, then scaled by s."""
    logits = F.linear(F.normalize(embeddings), F.normalize(weight)).clamp(-1, 1)
    rows = torch.arange(len(labels))
    with torch.no_grad():
        logits[rows, labels] = torch.cos(torch.acos(logits[rows, labels]) + m)
    return logits * s


def test_straight_through_arcface_has_arcface_torchs_gradient_and_exact_differs():
    torch.manual_seed(0)
    x, labels, weight = torch.randn(16, 32), torch.randint(0, 10, (16,)), torch.randn(10, 32)
    gradients = {}
    for name in ("reference", "straight_through", "exact"):
        inputs, centres = x.clone().requires_grad_(), torch.nn.Parameter(weight.clone())
        if name == "reference":
            logits = arcface_torch_logits(inputs, centres, labels, s=64.0, m=0.5)
        else:
            head = ArcFaceHead(32, 10, s=64.0, m=0.5, margin_grad=name)
            head.weight = centres
            logits = head(inputs, labels)
        F.cross_entropy(logits, labels).backward()
        gradients[name] = (logits.detach(), inputs.grad, centres.grad)
    for ours, reference in zip(gradients["straight_through"], gradients["reference"]):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gradients["exact"][0], gradients["reference"][0], rtol=1e-5, atol=1e-5)  # same logits
    assert not torch.allclose(gradients["exact"][1], gradients["reference"][1], rtol=1e-2)  # other gradient


def test_fp32_head_keeps_the_class_matmul_in_float32_under_autocast():
    torch.manual_seed(0)
    x, weight = torch.randn(8, 64), torch.randn(50, 64)
    results = {}
    for fp32 in (False, True):
        head = ArcFaceHead(64, 50, fp32=fp32)
        head.weight = torch.nn.Parameter(weight.clone())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results[fp32] = head.cosine(x)
    reference = F.linear(F.normalize(x), F.normalize(weight))
    torch.testing.assert_close(results[True], reference)
    assert (results[False] - reference).abs().max() > 1e-3  # bf16 matmul


def test_margin_presets_and_conflicts():
    assert resolve_margins("arcface") == (1.0, 0.5, 0.0)
    assert resolve_margins("cosface", m3=0.4) == (1.0, 0.0, 0.4)
    assert resolve_margins("combined", m2=0.3, m3=0.2) == (1.0, 0.3, 0.2)
    assert isinstance(build_head("arcface", 8, 4, m2=0.3), ArcFaceHead)
    with pytest.raises(ValueError, match="margin=combined"):
        resolve_margins("arcface", m3=0.2)
    with pytest.raises(ValueError, match="unknown margin"):
        resolve_margins("sphereface")


# --------------------------------------------------------------------------- metrics and schedule


def test_verification_metrics_on_hand_cases():
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.1])
    same = np.array([True, True, False, True, False, False])
    accuracy, threshold = best_threshold_accuracy(scores, same)
    assert accuracy == pytest.approx(5 / 6) and (0.7 < threshold < 0.8 or 0.3 < threshold < 0.4)
    assert best_threshold_accuracy(np.array([0.5, 0.5]), np.array([True, False]))[0] == 0.5  # ties cannot be split
    rng = np.random.default_rng(0)
    separable = np.concatenate([rng.uniform(0.6, 1, 50), rng.uniform(-1, 0.4, 50)])
    assert kfold_accuracy(separable, np.arange(100) < 50) == 1.0
    # TAR@FMR: 2000 impostors, 2 of them above every genuine score -> FMR 1e-3 allows both
    impostors = torch.cat([torch.full((1998,), -0.5), torch.tensor([0.99, 0.98])])
    genuine = torch.tensor([0.9, 0.8, 0.7, -0.9])
    scores_t = torch.cat([genuine, impostors])
    same_t = torch.cat([torch.ones(4), torch.zeros(2000)]).bool()
    assert tar_at_fmr(scores_t, same_t) == pytest.approx(0.75)
    assert tar_at_fmr(scores_t, same_t, fmr=0.0) == 0.0


def test_warmup_then_poly_and_cosine():
    poly = WarmupSchedule(4, 14, "poly", power=2.0)
    assert [poly(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert poly(4) == 1.0 and poly(9) == pytest.approx(0.25) and poly(14) == 0.0
    cosine = WarmupSchedule(0, 10, "cosine", min_ratio=0.1)
    assert cosine(0) == 1.0 and cosine(5) == pytest.approx(0.55) and cosine(10) == pytest.approx(0.1)
    linear = WarmupSchedule(0, 10, "poly", power=1.0)  # arcface_torch's PolynomialLRWarmup
    assert linear(5) == pytest.approx(0.5) and linear(9) == pytest.approx(0.1)


def test_a_restored_schedule_keeps_its_position_but_takes_the_new_horizon():
    parameter = torch.nn.Parameter(torch.zeros(1))
    old = torch.optim.SGD([parameter], lr=0.1)
    old_schedule = RunLengthLambdaLR(old, WarmupSchedule(0, 4, "poly", power=1.0))
    for _ in range(4):
        old.step()
        old_schedule.step()
    assert old.param_groups[0]["lr"] == 0.0  # the end of the 4-step run
    new = torch.optim.SGD([parameter], lr=0.1)
    new.load_state_dict(old.state_dict())
    schedule = RunLengthLambdaLR(new, WarmupSchedule(0, 8, "poly", power=1.0))
    schedule.load_state_dict(old_schedule.state_dict())
    assert schedule.last_epoch == 4 and new.param_groups[0]["lr"] == pytest.approx(0.05)
    new.step()
    schedule.step()
    assert new.param_groups[0]["lr"] == pytest.approx(0.0375)


# --------------------------------------------------------------------------- data modules


def test_augmentation_spec_is_built_strictly():
    compose = build_augmentations([{"HorizontalFlip": {"p": 1.0}}, {"OneOf": {"transforms": [{"Blur": {"p": 1}}], "p": 0.0}}], seed=1)
    assert type(compose.transforms[1]).__name__ == "OneOf" and type(compose.transforms[1].transforms[0]).__name__ == "Blur"
    image = np.arange(112 * 112 * 3, dtype=np.uint8).reshape(112, 112, 3)
    assert np.array_equal(compose(image=image)["image"][:, 0], image[:, -1])
    assert build_augmentations([]) is None
    with pytest.raises(InputError, match="no transform named"):
        build_augmentations([{"HorizontalFlipp": {}}])
    with pytest.raises(InputError, match="invalid"):
        build_augmentations([{"HorizontalFlip": {"prob": 0.5}}])


def _write_faces(folder: Path, identities: int, per_identity: int, shape=(120, 100)) -> None:
    rng = np.random.default_rng(0)
    for i in range(identities):
        (folder / f"person_{i}").mkdir(parents=True)
        for j in range(per_identity):
            image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            image[:4, :4] = (255, 0, 0)  # pure blue in cv2's BGR
            assert cv2.imwrite(str(folder / f"person_{i}" / f"{j}.png"), image)


def test_image_folder_datamodule_serves_uint8_batches_and_pair_list_validation(tmp_path):
    _write_faces(tmp_path / "train", identities=3, per_identity=3)
    pair_set = tmp_path / "pairs_eval"
    (pair_set / "images").mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(pair_set / "images" / name), np.full((112, 112, 3), 100, np.uint8))
    (pair_set / "pair_list.txt").write_text("a.png b.png 1\na.png c.png 0\n")
    dm = ImageFolderDataModule(str(tmp_path / "train"), val_sets=[str(pair_set)], colour_order="rgb", batch_size=4, num_workers=0,
                               augmentations=[{"HorizontalFlip": {"p": 0.5}}])
    assert dm.num_classes == 3 and dm.colour_order == "rgb"
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 112, 112) and labels.shape == (4,)
    plain, _ = next(iter(dm.calibration_dataloader()))
    assert plain.shape == (4, 3, 112, 112)
    corner = torch.stack([dm.calibration_dataset[i][0][:, 1, 1] for i in range(len(dm.calibration_dataset))])
    assert (corner[:, 2] > 200).all() and (corner[:, 0] < 50).all()  # blue is channel 2 in RGB (no flip here)
    (loader,) = dm.val_dataloader()
    assert loader.dataset.name == "pairs_eval" and loader.dataset.pairs.tolist() == [[0, 1], [0, 2]]
    indices, val_images = next(iter(loader))
    assert indices.tolist() == [0, 1, 2] and val_images.shape == (3, 3, 112, 112)


def test_recordio_datamodule_serves_rgb_batches_and_bin_validation(tmp_path):
    rng = np.random.default_rng(1)
    samples = []
    for label in range(4):
        for _ in range(3):
            image = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
            image[:8, :8] = (255, 0, 0)  # BGR blue
            samples.append((image, label))
    assert write_recordio(tmp_path / "rec", samples) == 4
    encoded = [cv2.imencode(".png", image)[1].tobytes() for image, _ in samples[:4]]
    write_bin_pairs(tmp_path / "tiny_lfw.bin", encoded, [True, False])
    dm = RecordIODataModule(str(tmp_path / "rec"), val_sets=[str(tmp_path / "tiny_lfw.bin")], batch_size=6, num_workers=0)
    assert dm.num_classes == 4 and dm.colour_order == "rgb"
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (6, 3, 112, 112) and images.dtype == torch.uint8 and set(labels.tolist()) <= {0, 1, 2, 3}
    first, _ = dm.calibration_dataset[0]
    assert first[2, 2, 2] > 200 and first[0, 2, 2] < 60  # JPEG of BGR blue decodes to RGB blue
    (loader,) = dm.val_dataloader()
    assert loader.dataset.name == "tiny_lfw" and len(loader.dataset) == 4
    indices, val_images = next(iter(loader))
    assert val_images[0, 2, 2, 2] > 200  # .bin images follow the same RGB order


def test_image_folder_index_is_built_once_and_reused(tmp_path):
    _write_faces(tmp_path / "train", identities=2, per_identity=2)
    index = tmp_path / "cache" / "index.npz"
    first = ImageFolderFaces(tmp_path / "train", index_file=index)
    assert index.exists() and len(first) == 4 and first.classes == ["person_0", "person_1"]
    cv2.imwrite(str(tmp_path / "train" / "person_1" / "late.png"), np.zeros((112, 112, 3), np.uint8))
    again = ImageFolderFaces(tmp_path / "train", index_file=index)  # read from the index, not listed again
    assert len(again) == 4 and again[3][1] == 1 and again[3][0].shape == (120, 100, 3)
    assert len(ImageFolderFaces(tmp_path / "train")) == 5
    with pytest.raises(InputError, match="delete it or give another index_file"):
        ImageFolderFaces(tmp_path / "train", extensions="jpg", index_file=index)


def test_image_folder_index_keeps_file_names_that_are_not_utf8(tmp_path):
    _write_faces(tmp_path / "train", identities=1, per_identity=1)
    latin1 = os.fsencode(tmp_path / "train" / "person_0") + b"/caf\xe9.png"
    ok, data = cv2.imencode(".png", np.zeros((112, 112, 3), np.uint8))
    with open(latin1, "wb") as file:
        file.write(data.tobytes())
    faces = ImageFolderFaces(tmp_path / "train", index_file=tmp_path / "index.npz")
    assert len(faces) == 2 and all(faces[i][0].shape[2] == 3 for i in range(2))


def test_training_loader_continues_from_its_saved_position():
    dm = SyntheticFacesDataModule(num_identities=12, images_per_identity=1, batch_size=2, num_workers=0, val_identities=0)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(3)
    epoch = [labels.tolist() for _, labels in loader]
    assert len(epoch) == 6 and sorted(sum(epoch, [])) == list(range(12))
    iterator = iter(loader)
    for _ in range(4):
        next(iterator)
    saved = dm.state_dict()
    assert saved["train_loader"] == {"epoch": 3, "batches": 4, "batch_size": 2, "num_replicas": 1, "num_samples": 12}
    resumed = SyntheticFacesDataModule(num_identities=12, images_per_identity=1, batch_size=2, num_workers=0, val_identities=0)
    resumed.load_state_dict(saved)
    loader = resumed.train_dataloader()
    assert len(loader) == 6  # Lightning counts the resumed epoch from its start
    loader.sampler.set_epoch(3)
    assert [labels.tolist() for _, labels in loader] == epoch[4:]
    assert [labels.tolist() for _, labels in loader] == epoch  # the next pass is whole again


# --------------------------------------------------------------------------- CLI smoke test


def test_synthetic_config_runs_under_fast_dev_run(tmp_path):
    env = dict(os.environ, WANDB_MODE="offline", NO_ALBUMENTATIONS_UPDATE="1")
    command = [
        sys.executable, "train_fr.py", "fit", "--config", "configs/train_fr/synthetic.yaml", "--trainer.fast_dev_run=true",
        f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--data.init_args.num_identities=20", "--data.init_args.images_per_identity=4", "--data.init_args.batch_size=16",
        "--data.init_args.num_workers=0", "--data.init_args.val_identities=4", "--data.init_args.val_kinds=[blur]",
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "BNRecalibration" in done.stdout + done.stderr
    assert not (tmp_path / "backbone.pth").exists()  # fast_dev_run exports nothing


def test_the_tensorboard_config_replaces_the_recipes_logger(capsys):
    import train_fr

    with pytest.raises(SystemExit) as exit_status:
        train_fr.main(["fit", "--config", "configs/train_fr/synthetic.yaml", "--config", "configs/train_fr/logger_tensorboard.yaml",
                       "--print_config"])
    logger = yaml.safe_load(capsys.readouterr().out)["trainer"]["logger"]
    assert exit_status.value.code in (0, None) and logger["class_path"] == "lightning.pytorch.loggers.TensorBoardLogger"
    assert logger["init_args"]["save_dir"] == "outputs/train/tensorboard"


def test_train_fr_reports_a_corrupt_bin_validation_set_in_one_line(tmp_path, capsys):
    import train_fr

    write_recordio(tmp_path / "rec", [(np.zeros((112, 112, 3), np.uint8), i // 2) for i in range(4)])
    (tmp_path / "lfw.bin").write_bytes(b"\x80\x04not a pickle at all" * 20)
    status = train_fr.main([
        "fit", "--config", "configs/train_fr/synthetic.yaml", "--trainer.logger=false", "--trainer.callbacks=[]",
        f"--trainer.default_root_dir={tmp_path}", "--data=grafiqs.lit.datamodules.RecordIODataModule",
        f"--data.root={tmp_path / 'rec'}", f"--data.val_sets=[{tmp_path / 'lfw.bin'}]", "--data.num_workers=0",
    ])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and lines[-1].startswith("error: ") and "lfw.bin" in lines[-1]
    assert not any("Traceback" in line for line in lines)


# --------------------------------------------------------------------------- short real fit


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model fitted for 3 steps, BN-recalibrated over 3 batches and exported."""
    out = tmp_path_factory.mktemp("fit")
    L.seed_everything(0)
    dm = SyntheticFacesDataModule(num_identities=20, images_per_identity=4, batch_size=16, num_workers=0, val_identities=4,
                                  val_kinds=["blur", "dark"], val_severities=[0, 2], augmentations=[{"HorizontalFlip": {"p": 0.5}}])
    model = FaceRecognitionModule(num_classes=dm.num_classes, colour_order=dm.colour_order, s=16.0, m2=0.3, lr=0.05,
                                  warmup_epochs=0.5, **TINY)
    # ExportBackbone listed first on purpose: it must still export the recalibrated statistics.
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[ExportBackbone(str(out)), BNRecalibration(num_batches=3)])
    trainer.fit(model, dm)
    return dm, model, trainer, out


def test_fit_logs_loss_and_verification_metrics(trained):
    _, _, trainer, _ = trained
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss_epoch"])
    assert 0.0 <= float(metrics["val/synthetic/acc"]) <= 1.0
    assert 0.0 <= float(metrics["val/synthetic/tar@fmr1e-3"]) <= 1.0


def test_bn_recalibration_is_the_exact_average_over_the_calibration_batches(trained):
    dm, model, _, _ = trained
    reference = copy.deepcopy(model.backbone).eval()
    layers = batchnorm_layers(reference)
    captured = {bn: [] for bn in layers}

    def capture(bn, inputs):
        x = inputs[0].double()
        dims = [0] + list(range(2, x.dim()))
        captured[bn].append((x.mean(dims), x.var(dims, unbiased=True)))  # BN stores the unbiased variance

    for bn in layers:
        bn.train()  # batch statistics, as during recalibration; every other module in eval mode
        bn.register_forward_pre_hook(capture)
    with torch.no_grad():
        for index, (images, _) in enumerate(dm.calibration_dataloader()):
            if index == 3:
                break
            reference(((images.float() / 255) - 0.5) / 0.5)
    trained_layers = batchnorm_layers(model.backbone)
    assert len(trained_layers) == len(layers) > 10
    for bn, ours in zip(layers, trained_layers):
        means = torch.stack([m for m, _ in captured[bn]])
        variances = torch.stack([v for _, v in captured[bn]])
        assert len(means) == 3 and int(ours.num_batches_tracked) == 3
        torch.testing.assert_close(ours.running_mean.double(), means.mean(0), atol=1e-4, rtol=0)
        torch.testing.assert_close(ours.running_var.double(), variances.mean(0), atol=1e-4, rtol=1e-4)
        assert ours.momentum == 0.1 and not ours.training
    assert model.bn_recalibration == {"num_batches": 3, "batch_size": 16, "augmented": False}


def test_exported_backbone_loads_and_reproduces_the_embeddings(trained):
    _, model, _, out = trained
    images = torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8)
    with torch.no_grad():
        expected = model.eval()(images)
    inferred = load_backbone(None, out / "backbone.pth")
    explicit = load_weights(IResNet((1, 1, 1, 1), 32, widths=(8, 16, 32, 64)), read_state_dict(out / "backbone.pth")).eval()
    from_checkpoint = load_backbone(None, out / "grafiqs.ckpt")  # head.* is dropped
    x = ((images.float() / 255) - 0.5) / 0.5
    with torch.no_grad():
        for backbone in (inferred, explicit, from_checkpoint):
            torch.testing.assert_close(backbone(x), expected, atol=1e-5, rtol=1e-5)
    state = torch.load(out / "backbone.pth", weights_only=True)
    assert "conv1.weight" in state and "layer4.0.downsample.1.running_var" in state and not any(k.startswith("head") for k in state)


def test_project_checkpoint_metadata_reads_back_with_weights_only(trained):
    _, model, _, out = trained
    raw = torch.load(out / "grafiqs.ckpt", map_location="cpu", weights_only=True)  # plain types only
    assert any(k.startswith("head.") for k in raw["state_dict"])
    meta = read_checkpoint_metadata(out / "grafiqs.ckpt")
    assert meta["arch"] == "custom" and meta["layers"] == (1, 1, 1, 1) and meta["widths"] == (8, 16, 32, 64)
    assert meta["num_features"] == 32 and meta["colour_order"] == "bgr"
    assert meta["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert meta["bn_recalibration"]["num_batches"] == 3
    assert "normalization" not in raw["hyper_parameters"]  # only init arguments: train_fr.py --ckpt_path re-parses them
    assert read_checkpoint_metadata(out / "backbone.pth") is None
    reloaded = FaceRecognitionModule.load_from_checkpoint(out / "grafiqs.ckpt", map_location="cpu", weights_only=True)
    assert reloaded.bn_recalibration["num_batches"] == 3
    torch.testing.assert_close(reloaded.backbone.layer1[0].bn1.running_var, model.backbone.layer1[0].bn1.running_var)


def test_score_py_loads_the_exported_files_with_the_recorded_colour_order(trained, tmp_path, capsys):
    from grafiqs.cli.score import main
    from grafiqs.io.score_files import read_score_file

    _, model, _, out = trained
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(3):
        cv2.imwrite(str(faces / f"{i}.png"), np.random.default_rng(i).integers(0, 256, (112, 112, 3), dtype=np.uint8))
    meta = read_checkpoint_metadata(out / "backbone.ckpt")
    assert meta == {k: v for k, v in read_checkpoint_metadata(out / "grafiqs.ckpt").items()}
    assert (out / "backbone.ckpt").stat().st_size < 1.1 * (out / "backbone.pth").stat().st_size  # no head, no optimizer
    runs = {}
    for name, extra in (("pth", ["--backbone", "custom", "--weights", str(out / "backbone.pth")]),
                        ("ckpt", ["--weights", str(out / "backbone.ckpt")])):
        assert main(["--image-path", str(faces), "--output-dir", str(tmp_path / name), *extra]) == 0
        runs[name] = read_score_file(tmp_path / name / "GraFIQs_image.txt")
    assert len(runs["pth"]) == 3 and runs["pth"] == runs["ckpt"]  # the model was trained on BGR: same input
    assert main(["--image-path", str(faces), "--output-dir", str(tmp_path / "rgb"), "--bgr2rgb",
                 "--weights", str(out / "backbone.ckpt")]) == 0
    assert "was trained on BGR images" in capsys.readouterr().err


def test_module_rejects_inconsistent_arguments():
    with pytest.raises(ValueError, match="needs `layers`"):
        FaceRecognitionModule(num_classes=3, arch="custom")
    with pytest.raises(ValueError, match="4 positive integers"):
        FaceRecognitionModule(num_classes=3, arch="custom", layers=[1, 1, 1])
    with pytest.raises(ValueError, match="margin=combined"):
        FaceRecognitionModule(num_classes=3, margin="cosface", m2=0.2, **TINY)
    with pytest.raises(InputError, match="overlaps the training identities"):
        SyntheticFacesDataModule(num_identities=100, val_identity_offset=50)


def test_training_step_normalises_uint8_on_the_module():
    torch.manual_seed(0)
    model = FaceRecognitionModule(num_classes=5, **TINY).eval()
    images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(model(images), model.backbone(((images.float() / 255) - 0.5) / 0.5))
        embedded = model.embed(images, flip=True)
    torch.testing.assert_close(embedded.norm(dim=1), torch.ones(2))
    assert F.cross_entropy(model.head(model(images), torch.tensor([0, 4])), torch.tensor([0, 4])) > 0


def _clipped_gradients(clip_backbone_only: bool, max_norm: float) -> tuple[dict, dict]:
    """(gradients before, after) configure_gradient_clipping of one tiny training step."""
    torch.manual_seed(0)
    model = FaceRecognitionModule(num_classes=5, clip_backbone_only=clip_backbone_only, **TINY)
    images, labels = torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8), torch.tensor([0, 1, 2, 3])
    model.head.loss_and_accuracy(model(images), labels)[0].backward()
    before = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.configure_gradient_clipping(None, gradient_clip_val=max_norm, gradient_clip_algorithm="norm")
    return before, {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def total_norm(gradients) -> float:
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in gradients])))


def test_clip_backbone_only_leaves_the_head_gradient_alone():
    before, after = _clipped_gradients(clip_backbone_only=True, max_norm=1e-3)
    assert torch.equal(after["head.weight"], before["head.weight"])
    assert total_norm(after[k] for k in after if k.startswith("backbone.")) == pytest.approx(1e-3, rel=1e-3)
    before, after = _clipped_gradients(clip_backbone_only=False, max_norm=1e-3)  # Lightning's default: all together
    scale = 1e-3 / (total_norm(before.values()) + 1e-6)
    for key, value in after.items():
        torch.testing.assert_close(value, before[key] * scale)


def test_gradient_checkpointing_gives_the_same_gradients_and_bn_statistics():
    torch.manual_seed(0)
    images, labels = torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8), torch.tensor([0, 1, 2, 3])
    plain = FaceRecognitionModule(num_classes=5, **TINY)
    checkpointed = FaceRecognitionModule(num_classes=5, gradient_checkpointing=True, **TINY)
    checkpointed.load_state_dict(plain.state_dict())
    for model in (plain, checkpointed):
        model.train()
        model.head.loss_and_accuracy(model(images), labels)[0].backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
    for (name, a), b in zip(plain.named_buffers(), checkpointed.buffers()):
        torch.testing.assert_close(b, a, msg=name)  # running statistics updated once, not again in the recomputation


# --------------------------------------------------------------------------- DDP

DDP_SCRIPT = '''
import os, sys, json
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
import lightning as L
from grafiqs.lit.datamodules import SyntheticFacesDataModule
from grafiqs.lit.callbacks import BNRecalibration, ExportBackbone
from grafiqs.lit.fr_module import FaceRecognitionModule
out = sys.argv[1]
L.seed_everything(0)
dm = SyntheticFacesDataModule(num_identities=20, images_per_identity=4, batch_size=8, num_workers=0, val_identities=5,
                              val_kinds=["blur"], val_severities=[0, 2])
model = FaceRecognitionModule(num_classes=20, arch="custom", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64], num_features=32,
                              s=16.0, m2=0.3, log_images=0)
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, limit_train_batches=2, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                    callbacks=[BNRecalibration(num_batches=3), ExportBackbone(out)])
trainer.fit(model, dm)
metrics = trainer.validate(model, dm, verbose=False)[0]
bn = model.backbone.layer2[0].bn2
with open(os.path.join(out, f"rank{trainer.global_rank}.json"), "w") as f:
    json.dump({"metrics": metrics, "mean": bn.running_mean.tolist(), "var": bn.running_var.tolist(),
               "batches": int(bn.num_batches_tracked)}, f)
'''


def test_ddp_two_cpu_processes_gather_embeddings_and_average_bn_statistics(tmp_path):
    """Under DDP (gloo, 2 processes): every rank ends with the same BN statistics (averaged over
    3 batches per rank) and the same verification metrics, equal to a single-process validation."""
    import json

    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, WANDB_MODE="offline", NO_ALBUMENTATIONS_UPDATE="1")
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]["batches"] == 6
    dm = SyntheticFacesDataModule(num_identities=20, images_per_identity=4, batch_size=8, num_workers=0, val_identities=5,
                                  val_kinds=["blur"], val_severities=[0, 2])
    model = FaceRecognitionModule.load_from_checkpoint(tmp_path / "grafiqs.ckpt", map_location="cpu", weights_only=True)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    single = trainer.validate(model, dm, verbose=False)[0]
    assert single.keys() == ranks[0]["metrics"].keys()
    for key, value in single.items():
        assert value == pytest.approx(ranks[0]["metrics"][key], abs=1e-6), key
