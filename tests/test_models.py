"""iResNet key layout, stage outputs and weight-loading errors."""
import os
import pickle

import numpy as np
import pytest
import torch

from conftest import GOLDEN, tiny_iresnet
from grafiqs.errors import WeightsError
from grafiqs.models.iresnet import ARCHITECTURES, PReLU, build_iresnet
from grafiqs.models.loading import describe_architecture, load_backbone, read_state_dict


def test_iresnet50_keys_are_the_insightface_layout():
    keys = set(build_iresnet("iresnet50").state_dict())
    # Every running statistic of the authors' iresnet50 (bn_stats.npz holds them by key) has its place.
    assert set(np.load(GOLDEN / "bn_stats.npz").files) <= keys
    for key in ("conv1.weight", "bn1.running_var", "prelu.weight", "layer1.0.bn1.weight", "layer1.0.conv2.weight",
                "layer3.13.bn3.bias", "layer4.0.downsample.0.weight", "layer4.0.downsample.1.running_mean",
                "bn2.weight", "fc.weight", "fc.bias", "features.weight", "features.running_mean"):
        assert key in keys


@pytest.mark.parametrize("arch,millions", [("iresnet18", 24.0), ("iresnet50", 43.6), ("iresnet100", 65.2)])
def test_parameter_counts_match_the_published_models(arch, millions):
    count = sum(p.numel() for p in build_iresnet(arch).parameters())
    assert abs(count / 1e6 - millions) < 0.15


def test_forward_stages_gives_the_four_stage_outputs_and_the_embedding():
    model = tiny_iresnet(num_features=32)
    embedding, stages = model.forward_stages(torch.zeros(2, 3, 112, 112))
    assert embedding.shape == (2, 32)
    assert [tuple(s.shape[1:]) for s in stages.values()] == [(8, 56, 56), (16, 28, 28), (32, 14, 14), (64, 7, 7)]
    assert torch.equal(model(torch.zeros(2, 3, 112, 112)), embedding)


@pytest.mark.parametrize("dtype, layout", [(torch.float32, torch.contiguous_format),
                                           (torch.bfloat16, torch.contiguous_format), (torch.bfloat16, torch.channels_last)])
def test_prelu_with_a_frozen_weight_has_atens_values_and_input_gradient_bit_for_bit(dtype, layout):
    torch.manual_seed(0)
    x = torch.randn(3, 6, 5, 4).to(dtype).contiguous(memory_format=layout)  # a bf16 activation, as autocast makes
    x[0, 0, 0, :2] = 0.0  # the kink belongs to the negative side in both
    upstream = torch.randn(3, 6, 5, 4)
    results = []
    for module in (torch.nn.PReLU(6), PReLU(6)):
        with torch.no_grad():
            module.weight.copy_(torch.linspace(-0.5, 1.5, 6))
        module.requires_grad_(False)
        inputs = x.detach().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = module(inputs)
        (gradient,) = torch.autograd.grad(out, inputs, upstream.to(dtype))
        results.append((out, gradient))
    (aten_out, aten_gradient), (out, gradient) = results
    assert out.dtype == aten_out.dtype and torch.equal(out, aten_out)
    assert torch.equal(gradient, aten_gradient)


def test_prelu_with_a_trainable_weight_still_learns_it():
    torch.manual_seed(0)
    x, module, reference = torch.randn(4, 3, 2, 2), PReLU(3), torch.nn.PReLU(3)
    module(x).square().sum().backward()
    reference(x).square().sum().backward()
    assert module.weight.grad is not None and torch.equal(module.weight.grad, reference.weight.grad)


def test_architecture_is_inferred_from_the_keys(tmp_path):
    assert describe_architecture(build_iresnet("iresnet34").state_dict())["arch"] == "iresnet34"
    path = tmp_path / "tiny.pth"
    torch.save({"module." + k: v for k, v in tiny_iresnet().state_dict().items()}, path)  # DDP-saved
    model = load_backbone(None, path)
    assert model.layers_per_stage == (1, 1, 1, 1) and model.widths == (8, 16, 32, 64) and model.num_features == 32


def test_wrong_architecture_names_the_mismatch_and_suggests_the_right_one(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(build_iresnet("iresnet18").state_dict(), path)
    with pytest.raises(WeightsError) as error:
        load_backbone("iresnet50", path)
    message = str(error.value)
    assert "missing keys" in message and "layer1.2.bn1.weight" in message and "suggest iresnet18" in message


def test_shape_mismatch_is_reported(tmp_path):
    path = tmp_path / "r18_128.pth"
    torch.save(build_iresnet("iresnet18", num_features=128).state_dict(), path)
    with pytest.raises(WeightsError, match=r"shape mismatches: fc.weight: file \(128, 25088\) vs model \(512, 25088\)"):
        load_backbone("iresnet18", path, num_features=512)


def test_missing_truncated_and_non_checkpoint_files(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        read_state_dict(tmp_path / "absent.pth")
    good = tmp_path / "good.pth"
    torch.save(tiny_iresnet().state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="not a readable PyTorch weights file"):
        read_state_dict(truncated)
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(WeightsError, match="not a readable PyTorch weights file"):
        read_state_dict(text)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.pth"
    torch.save({"conv1.weight": torch.zeros(1), "evil": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="refused to unpickle"):
        read_state_dict(path)
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"  # a plain pickle, not even a torch zip
    raw.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(WeightsError, match="posix.system"):
        read_state_dict(raw)
    assert not marker.exists()


def test_every_published_depth_builds():
    for arch, layers in ARCHITECTURES.items():
        if arch in ("iresnet18", "iresnet34"):
            assert build_iresnet(arch).layers_per_stage == layers
    with pytest.raises(ValueError, match="unknown backbone"):
        build_iresnet("resnet50")
