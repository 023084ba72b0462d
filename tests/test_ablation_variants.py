"""The ablation engine (grafiqs.quality.groups) against GraFIQsScorer and per-image loop oracles."""
import copy

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from conftest import tiny_iresnet
from grafiqs.errors import InputError
from grafiqs.quality.discrepancy import KL_EPS, OFFICIAL_LOSS, LossVariant, bns_loss, parse_loss_variant
from grafiqs.quality.groups import (
    ACTIVATION_GROUPS,
    AGGREGATIONS,
    GROUPS,
    PARAMETER_GROUPS,
    PARAMETER_PREFIXES,
    Variant,
    VariantScorer,
    loss_grid,
    parse_variant,
    variant_grid,
)
from grafiqs.quality.scorer import GraFIQsScorer

CHECKED_LOSSES = [
    LossVariant("mean", "mse", "all"),
    LossVariant("var", "mse", "all"),
    LossVariant("mean+var", "l1", "all"),
    LossVariant("mean+var", "kl", "all"),
    LossVariant("mean+var", "mse", "layer2"),
    LossVariant("mean+var", "mse", "stem"),
]


@pytest.fixture(scope="module")
def model():
    return tiny_iresnet()


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(1)
    scale = torch.linspace(0.3, 1.5, 5).view(5, 1, 1, 1)  # different samples, different scores
    return (torch.rand(5, 3, 112, 112, generator=generator) * 2 - 1) * scale


# ---------------------------------------------------------------- oracles: one image at a time

def oracle_loss(model: nn.Module, image: torch.Tensor, variant: LossVariant, inputs: list[torch.Tensor] | None = None):
    """Loss of ONE image [1, 3, H, W] from explicit formulas; returns (loss, stage outputs)."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    if variant.layers == "stem":
        layers = {"bn1": layers["bn1"]}
    elif variant.layers != "all":
        layers = {n: m for n, m in layers.items() if n.startswith(variant.layers + ".")}
    per_layer = []

    def hook(module, args):
        x = args[0][0]  # [C, H, W]
        mean = x.mean(dim=(1, 2))
        var = ((x - mean[:, None, None]) ** 2).mean(dim=(1, 2))
        rm, rv = module.running_mean, module.running_var
        if variant.distance == "kl":
            kl = kl_divergence(Normal(mean, (var + KL_EPS).sqrt()), Normal(rm, (rv + KL_EPS).sqrt()))
            per_layer.append(kl.mean())
            return
        def distance(a, b):
            return ((a - b) ** 2).mean() if variant.distance == "mse" else (a - b).abs().mean()

        term = 0
        if "mean" in variant.terms:
            term = term + distance(mean, rm)
        if "var" in variant.terms:
            term = term + distance(var, rv)
        per_layer.append(term)

    handles = [m.register_forward_pre_hook(hook) for m in layers.values()]
    try:
        _, stages = model.forward_stages(image)
    finally:
        for h in handles:
            h.remove()
    return sum(per_layer) / len(per_layer), stages


def oracle_activation_scores(model, image, variant):
    with torch.enable_grad():
        image = image.clone().requires_grad_(True)
        loss, stages = oracle_loss(model, image, variant)
        tensors = [image] + [stages[g] for g in ACTIVATION_GROUPS[1:]]
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    scores = {"bns_loss": loss.item()}
    for group, g in zip(ACTIVATION_GROUPS, grads):
        g = torch.zeros(1) if g is None else g
        n = tensors[ACTIVATION_GROUPS.index(group)].numel()
        scores[(group, "l1")] = g.abs().sum().item()
        scores[(group, "l2")] = g.pow(2).sum().sqrt().item()
        scores[(group, "mean_abs")] = g.abs().sum().item() / n
    return scores


def oracle_parameter_scores(model, image, variant):
    """Per-image weight gradients with loss.backward() on a trainable copy of the model."""
    model = copy.deepcopy(model).eval().requires_grad_(True)
    loss, _ = oracle_loss(model, image, variant)
    loss.backward()
    scores = {}
    for group in PARAMETER_GROUPS:
        params = [p for n, p in model.named_parameters() if n.startswith(PARAMETER_PREFIXES[group])]
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        l1 = sum(g.abs().sum() for g in grads).item()
        scores[(group, "l1")] = l1
        scores[(group, "l2")] = sum(g.pow(2).sum() for g in grads).sqrt().item()
        scores[(group, "mean_abs")] = l1 / sum(p.numel() for p in params)
    return scores


# ---------------------------------------------------------------- tests

def test_official_variant_equals_grafiqs_scorer_bit_for_bit(model, images):
    expected = GraFIQsScorer(model)(images)
    result = VariantScorer(model, [OFFICIAL_LOSS, LossVariant("var", "l1")])(images)
    for group in ACTIVATION_GROUPS:
        assert torch.equal(result.columns[f"{OFFICIAL_LOSS.name}|group={group}|agg=l1"], expected.scores[group]), group
    assert torch.equal(result.columns[f"{OFFICIAL_LOSS.name}|bns_loss"], expected.bns_loss)
    assert torch.equal(result.embedding, expected.embedding)


def test_bns_loss_is_bit_for_bit_the_original_formula(model, images):
    scorer = VariantScorer(model)
    with scorer.statistics.record() as sample:
        model.forward_stages(images)
    running = scorer.statistics.running()
    original = 0.0  # the pre-ablation bns_loss, verbatim
    for name, (mean, variance) in sample.items():
        running_mean, running_var = running[name]
        original = original + (mean - running_mean).square().mean(1) + (variance - running_var).square().mean(1)
    original = original / len(sample)
    assert torch.equal(bns_loss(sample, running), original)
    assert torch.equal(OFFICIAL_LOSS(sample, running), original)


def test_loss_variants_equal_per_image_formulas(model, images):
    result = VariantScorer(model, CHECKED_LOSSES, ACTIVATION_GROUPS, AGGREGATIONS)(images[:3])
    for row in range(3):
        for variant in CHECKED_LOSSES:
            expected = oracle_activation_scores(model, images[row : row + 1], variant)
            got = result.columns[f"{variant.name}|bns_loss"][row].item()
            assert got == pytest.approx(expected["bns_loss"], rel=1e-5), variant.name
            for group in ACTIVATION_GROUPS:
                for agg in AGGREGATIONS:
                    got = result.columns[Variant(variant, group, agg).name][row].item()
                    want = expected[(group, agg)]
                    assert got == pytest.approx(want, rel=1e-4, abs=1e-12), f"{variant.name} {group} {agg}"


def test_restricted_layers_give_exact_zero_downstream(model, images):
    """layers=layer2 reads BN inputs up to layer2's last block: block2..block4 do not move it."""
    result = VariantScorer(model, [LossVariant(layers="layer2"), LossVariant(layers="stem")])(images[:2])
    for group in ("block2", "block3", "block4"):
        assert (result.columns[f"loss=mean+var,dist=mse,layers=layer2|group={group}|agg=l1"] == 0).all()
    assert (result.columns["loss=mean+var,dist=mse,layers=layer2|group=block1|agg=l1"] > 0).all()
    for group in ACTIVATION_GROUPS[1:]:
        assert (result.columns[f"loss=mean+var,dist=mse,layers=stem|group={group}|agg=l1"] == 0).all()


@pytest.mark.parametrize("variant", [OFFICIAL_LOSS, LossVariant("var", "l1", "layer3")], ids=lambda v: v.name)
def test_parameter_gradients_equal_per_image_backward(model, images, variant):
    # a second loss variant in the engine exercises the one-vjp-per-loss path
    losses = [variant, LossVariant("mean+var", "kl", "all")]
    result = VariantScorer(model, losses, PARAMETER_GROUPS, AGGREGATIONS, param_chunk_size=2)(images[:3])
    for row in range(3):
        expected = oracle_parameter_scores(model, images[row : row + 1], variant)
        for group in PARAMETER_GROUPS:
            for agg in AGGREGATIONS:
                got = result.columns[Variant(variant, group, agg).name][row].item()
                assert got == pytest.approx(expected[(group, agg)], rel=1e-4, abs=1e-12), f"{group} {agg}"
    # the BNS loss never reaches fc (the last BatchNorm2d is before it): exactly zero
    for agg in AGGREGATIONS:
        assert (result.columns[Variant(variant, "params:fc", agg).name] == 0).all()
    assert (result.columns[Variant(variant, "params:stem", "l1").name] > 0).all()


def test_batch_equals_one_by_one(model, images):
    losses = [OFFICIAL_LOSS, LossVariant("mean", "l1", "layer1"), LossVariant("mean+var", "kl", "all")]
    scorer = VariantScorer(model, losses, ACTIVATION_GROUPS + ("params:layer2",), AGGREGATIONS)
    batch = scorer(images)
    singles = [scorer(images[i : i + 1]) for i in range(len(images))]
    assert list(batch.columns) == scorer.columns
    for name, values in batch.columns.items():
        assert values.shape == (len(images),)
        one_by_one = torch.cat([s.columns[name] for s in singles])
        torch.testing.assert_close(values, one_by_one, rtol=1e-5, atol=1e-12, msg=name)
    torch.testing.assert_close(batch.embedding, torch.cat([s.embedding for s in singles]), rtol=1e-5, atol=1e-6)


def test_columns_are_the_cross_product(model):
    losses = loss_grid(terms=["mean", "mean+var"], distances=["mse", "kl"], layers=["all", "layer4"])
    assert len(losses) == 6  # kl only with mean+var
    scorer = VariantScorer(model, losses, ["image", "params:layer4"], ["l1", "l2"])
    expected = []
    for loss in losses:
        expected.append(f"{loss.name}|bns_loss")
        expected += [v.name for v in variant_grid([loss], ["image", "params:layer4"], ["l1", "l2"])]
    assert scorer.columns == expected


def test_parser_round_trip():
    variants = variant_grid(loss_grid(), GROUPS, AGGREGATIONS)
    assert len(variants) == (3 * 2 + 1) * 6 * len(GROUPS) * len(AGGREGATIONS)
    for variant in variants:
        assert parse_variant(variant.name) == variant
        assert parse_loss_variant(variant.loss.name) == variant.loss
    text = "loss=mean,dist=l1,layers=layer2|group=params:layer3|agg=l2"
    assert parse_variant(text) == Variant(LossVariant("mean", "l1", "layer2"), "params:layer3", "l2")
    assert parse_variant(text).name == text
    assert parse_variant("group=block2") == Variant(OFFICIAL_LOSS, "block2", "l1")
    assert parse_variant("dist=kl") == Variant(LossVariant(distance="kl"))
    assert OFFICIAL_LOSS.name == "loss=mean+var,dist=mse,layers=all"


@pytest.mark.parametrize(
    "text, message",
    [
        ("loss=median", "unknown loss terms"),
        ("dist=cosine", "unknown distance"),
        ("layers=layer5", "unknown layers"),
        ("layers=bn2", "unknown layers"),
        ("loss=mean,dist=kl", "dist=kl"),
        ("group=block5", "unknown gradient group"),
        ("group=params:bn2", "unknown gradient group"),
        ("agg=max", "unknown aggregation"),
        ("loss=mean|loss=var", "two loss sections"),
        ("group=image|group=block1", "given twice"),
        ("loss=mean,loss=var", "given twice"),
        ("colour=red", "bad variant section"),
        ("loss=mean,foo=1", "bad loss-variant item"),
        ("group", "bad variant section"),
    ],
)
def test_parser_errors(text, message):
    for error in (ValueError, InputError):
        with pytest.raises(error, match=message):
            parse_variant(text)


def test_engine_rejects_unknown_axes(model):
    with pytest.raises(InputError, match="unknown gradient group"):
        VariantScorer(model, groups=["image", "block9"])
    with pytest.raises(ValueError, match="unknown aggregation"):
        VariantScorer(model, aggregations=["l3"])
    with pytest.raises(ValueError, match="at least one loss"):
        VariantScorer(model, [])
    with pytest.raises(ValueError, match="unknown distance"):
        LossVariant(distance="l2")


def test_parameter_losses_restrict_the_weight_pass_only():
    model = tiny_iresnet()
    images = torch.rand(3, 3, 112, 112) * 2 - 1
    losses = loss_grid(["mean+var", "var"], ["mse"], ["all"])
    full = VariantScorer(model, losses, groups=["image", "params:layer2"])(images).columns
    restricted = VariantScorer(model, losses, groups=["image", "params:layer2"], parameter_losses=losses[:1])(images).columns
    assert set(full) - set(restricted) == {"loss=var,dist=mse,layers=all|group=params:layer2|agg=l1"}
    for name, values in restricted.items():
        torch.testing.assert_close(values, full[name])
