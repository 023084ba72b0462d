"""One scoring engine: the official score is a variant of it, ablations get its options and status checks."""
import math

import pytest
import torch

from conftest import tiny_iresnet
from grafiqs.experiments.benchmark import VariantPass
from grafiqs.lit.quality_module import GraFIQsModule, PassModule
from grafiqs.quality.discrepancy import OFFICIAL_LOSS, LossVariant
from grafiqs.quality.groups import (
    ACTIVATION_GROUPS,
    AGGREGATIONS,
    STATUS_INPUT,
    STATUS_OK,
    Variant,
    VariantScorer,
    loss_column,
)
from grafiqs.quality.scorer import GROUPS, GraFIQsScorer

ABLATION_LOSSES = [OFFICIAL_LOSS, LossVariant("var", "l1", "layer2"), LossVariant("mean+var", "kl", "all")]


@pytest.fixture(scope="module")
def model():
    return tiny_iresnet()


@pytest.fixture(scope="module")
def uint8_images():
    generator = torch.Generator().manual_seed(4)
    return torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def images(uint8_images):
    return (uint8_images.float() / 255 - 0.5) / 0.5


def official(group: str) -> str:
    return Variant(OFFICIAL_LOSS, group, "l1").name


@pytest.mark.parametrize("precision, channels_last", [("32", False), ("bf16", False), ("32", True)])
def test_ablation_official_columns_equal_the_score_py_module_exactly(uint8_images, precision, channels_last):
    """score.py's GraFIQsModule and the benchmark's GraFIQs pass (a larger grid) run the same ops."""
    model = tiny_iresnet()  # its own: channels_last converts the model
    batch = {"index": torch.arange(4), "image": uint8_images, "resized": torch.zeros(4, dtype=torch.bool),
             "errors": []}
    scored = GraFIQsModule(model, precision=precision, channels_last=channels_last,
                           return_embeddings=True).predict_step(batch, 0)
    engine = VariantScorer(model, ABLATION_LOSSES, ACTIVATION_GROUPS + ("params:layer3",), AGGREGATIONS,
                           precision=precision, channels_last=channels_last)
    ablated = PassModule(model, VariantPass(engine)).predict_step(batch, 0)["outputs"]
    for group in GROUPS:
        assert torch.equal(ablated[official(group)], scored["scores"][group]), group
    assert torch.equal(ablated[loss_column(OFFICIAL_LOSS)], scored["bns_loss"])
    assert ablated["status"].tolist() == scored["status"].tolist() == [STATUS_OK] * 4


@pytest.mark.parametrize("groups", [("block4",), ("block3",), ("block1", "block4"), ("image",)], ids="+".join)
def test_only_the_asked_groups_are_computed_with_the_same_numbers(model, images, groups):
    everything = GraFIQsScorer(model)(images)
    recorded = {}  # stage -> did autograd record its output?
    modules = {"stem": model.prelu, **dict(zip(GROUPS[1:], model.stages()))}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: recorded.__setitem__(name, o.requires_grad))
             for name, m in modules.items()]
    try:
        asked = GraFIQsScorer(model, groups=groups)(images)
    finally:
        for hook in hooks:
            hook.remove()
    assert list(asked.scores) == list(groups)
    for group in groups:
        assert torch.equal(asked.scores[group], everything.scores[group]), group
    assert torch.equal(asked.bns_loss, everything.bns_loss)
    # the earliest asked tensor starts the graph: a stage is recorded for the backward only when its input is
    # the image (stem, layer1) or comes after an asked block (layer k reads block k-1)
    earliest = min(GROUPS.index(g) for g in groups)
    assert [recorded[name] for name in modules] == [earliest < max(k, 1) for k in range(len(modules))]


def test_a_loss_that_never_reaches_the_asked_group_scores_exact_zero(model, images):
    losses = [LossVariant(layers="stem"), LossVariant(layers="layer4"), OFFICIAL_LOSS]
    result = VariantScorer(model, losses, groups=["block4"])(images)
    for loss in losses[:2]:  # both read only BN inputs before block4 (layer4's BNs come before its output)
        assert (result.columns[Variant(loss, "block4", "l1").name] == 0).all()
    assert torch.equal(result.columns[official("block4")], GraFIQsScorer(model)(images).scores["block4"])


def test_a_bad_sample_gets_nan_in_every_gradient_column_and_a_status(model, images):
    scorer = VariantScorer(model, ABLATION_LOSSES, ACTIVATION_GROUPS + ("params:layer2",), ["l1", "l2"])
    poisoned = images.clone()
    poisoned[1, 2, 7, 7] = float("inf")
    result = scorer(poisoned)
    clean = scorer(images[[0, 2, 3]])
    assert result.status.tolist() == [STATUS_OK, STATUS_INPUT, STATUS_OK, STATUS_OK]
    losses = {loss_column(loss) for loss in ABLATION_LOSSES}
    for name, values in result.columns.items():
        if name not in losses:
            assert math.isnan(values[1]), name
        torch.testing.assert_close(values[[0, 2, 3]], clean.columns[name], rtol=1e-5, atol=1e-12, msg=name)


def test_keep_gradients_returns_each_loss_and_group_gradient(model, images):
    losses = ABLATION_LOSSES[:2]
    result = VariantScorer(model, losses, ["block2", "image", "params:stem"])(images, keep_gradients=True)
    assert list(result.gradients) == [f"{loss.name}|group={g}" for loss in losses for g in ("block2", "image")]
    for name, gradient in result.gradients.items():
        assert torch.equal(gradient.abs().flatten(1).sum(1), result.columns[f"{name}|agg=l1"])
    official_maps = GraFIQsScorer(model, groups=("image", "params:stem"))(images, keep_gradients=True).gradients
    assert list(official_maps) == ["image"] and official_maps["image"].shape == images.shape
    assert VariantScorer(model)(images).gradients is None


def test_bf16_changes_the_activation_pass_only(model, images):
    groups = ("image", "block4", "params:layer1")
    exact = VariantScorer(model, ABLATION_LOSSES[:2], groups)(images).columns
    approximate = VariantScorer(model, ABLATION_LOSSES[:2], groups, precision="bf16")(images).columns
    for name, values in exact.items():
        if "params:" in name:  # the per-sample weight pass stays float32
            assert torch.equal(approximate[name], values), name
        else:
            torch.testing.assert_close(approximate[name], values, rtol=0.1, atol=0, msg=name)
    with pytest.raises(ValueError, match="precision"):
        VariantScorer(model, precision="16")
