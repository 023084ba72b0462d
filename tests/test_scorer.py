"""The batched scorer equals the official-style per-image loop; options change layout or precision only."""
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import tiny_iresnet
from grafiqs.quality.bn_stats import ChannelMoments
from grafiqs.quality.reference import reference_scores
from grafiqs.quality.scorer import GROUPS, GraFIQsScorer


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(5, 3, 112, 112) * 2 - 1


@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_equals_per_image_reference(images, channels_last):
    model = tiny_iresnet()
    expected = [reference_scores(model, images[i : i + 1]) for i in range(len(images))]
    result = GraFIQsScorer(model, channels_last=channels_last)(images)
    for i, reference in enumerate(expected):
        for group in GROUPS:
            assert result.scores[group][i].item() == pytest.approx(reference[group], rel=1e-5)
        assert result.bns_loss[i].item() == pytest.approx(reference["bns_loss"], rel=1e-5)
    assert torch.allclose(result.embedding, model.to(memory_format=torch.contiguous_format)(images), atol=1e-5)


def test_subset_of_groups_and_unknown_group(images):
    result = GraFIQsScorer(tiny_iresnet(), groups=("block2",))(images)
    assert list(result.scores) == ["block2"]
    with pytest.raises(ValueError, match="unknown gradient group"):
        GraFIQsScorer(tiny_iresnet(), groups=("weights",))


def test_bf16_scores_are_close_to_float32(images):
    model = tiny_iresnet()
    exact = GraFIQsScorer(model)(images)
    approximate = GraFIQsScorer(model, precision="bf16")(images)
    for group in GROUPS:
        a, b = exact.scores[group].numpy(), approximate.scores[group].numpy()
        assert approximate.scores[group].dtype == torch.float32 and np.isfinite(b).all()
        assert np.allclose(a, b, rtol=0.1)
    with pytest.raises(ValueError, match="precision"):
        GraFIQsScorer(model, precision="fp8")


def test_channel_moments_match_var_mean_and_its_gradient():
    torch.manual_seed(2)
    x = (5 + 0.1 * torch.randn(3, 4, 7, 6, dtype=torch.float64)).requires_grad_(True)  # offset mean: no cancellation
    mean, variance = ChannelMoments.apply(x)
    expected_variance, expected_mean = torch.var_mean(x, dim=(2, 3), correction=0)
    assert torch.allclose(mean, expected_mean, rtol=1e-12) and torch.allclose(variance, expected_variance, rtol=1e-9)
    weights = torch.randn(2, 3, 4, dtype=torch.float64)
    loss = lambda m, v: (weights[0] * m + weights[1] * v**2).sum()  # noqa: E731
    (gradient,) = torch.autograd.grad(loss(mean, variance), x)
    (expected,) = torch.autograd.grad(loss(expected_mean, expected_variance), x)
    assert torch.allclose(gradient, expected, rtol=1e-9, atol=1e-12)
    assert torch.autograd.gradcheck(ChannelMoments.apply, (x[:1, :2].detach().requires_grad_(True),))


def test_channel_moments_stay_float32_under_bf16_autocast():
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mean, variance = ChannelMoments.apply(x)
    assert variance.dtype == torch.float32
    assert torch.allclose(variance, x.var(dim=(2, 3), correction=0), rtol=1e-6)


def test_channel_moments_of_bf16_and_channels_last_inputs_are_float32_statistics_of_those_values():
    torch.manual_seed(3)
    values = (0.3 + 0.5 * torch.randn(2, 5, 9, 7)).bfloat16()
    expected_variance, expected_mean = torch.var_mean(values.double(), dim=(2, 3), correction=0)
    weights = torch.randn(2, 2, 5, dtype=torch.float64)
    for x in (values, values.contiguous(memory_format=torch.channels_last),
              values.float().contiguous(memory_format=torch.channels_last)):
        x = x.detach().requires_grad_(True)
        mean, variance = ChannelMoments.apply(x)
        assert mean.dtype == variance.dtype == torch.float32  # no bf16 rounding of the statistics
        assert torch.allclose(mean.double(), expected_mean, rtol=1e-6)
        assert torch.allclose(variance.double(), expected_variance, rtol=1e-6)
        (gradient,) = torch.autograd.grad((weights[0] * mean + weights[1] * variance).sum(), x)
        reference = values.double().requires_grad_(True)
        expected_variance_, expected_mean_ = torch.var_mean(reference, dim=(2, 3), correction=0)
        (expected,) = torch.autograd.grad((weights[0] * expected_mean_ + weights[1] * expected_variance_).sum(), reference)
        assert gradient.dtype == x.dtype  # the gradient flows on in the activation's own precision
        tolerance = 1e-2 if x.dtype == torch.bfloat16 else 1e-5
        assert torch.allclose(gradient.double(), expected, rtol=tolerance, atol=tolerance * expected.abs().max())


HEAP_SCRIPT = """
import ctypes, sys, torch
from grafiqs.allocator import retain_freed_memory

class MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2: ten size_t counters
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
mallinfo2.restype = MallInfo2
if sys.argv[1] == "retain":
    assert retain_freed_memory()
activation = torch.empty(16, 64, 112, 112)  # one stem activation of a batch of 16: 51 MB
print(mallinfo2().hblkhd)  # bytes held in mmap-ed blocks, which free() hands back to the kernel
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_retain_freed_memory_serves_activations_from_the_heap_not_from_fresh_mappings():
    def mapped_bytes(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", HEAP_SCRIPT, mode], capture_output=True, text=True, check=True)
        return int(run.stdout.split()[-1])

    activation = 16 * 64 * 112 * 112 * 4
    assert mapped_bytes("default") >= activation  # glibc maps it afresh, so each use faults its pages in
    assert mapped_bytes("retain") < activation
