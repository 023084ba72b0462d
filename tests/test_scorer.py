"""The batched scorer equals the official-style per-image loop; options change layout or precision only."""
import numpy as np
import pytest
import torch

from conftest import tiny_iresnet
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
    with pytest.raises(ValueError, match="unknown gradient groups"):
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
