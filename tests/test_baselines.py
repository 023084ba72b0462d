"""Training-free FIQA baselines (grafiqs.quality.baselines) and other methods' score files."""
import copy

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import GOLDEN, tiny_iresnet
from grafiqs.data.decode import normalize
from grafiqs.data.external_scores import read_external_scores
from grafiqs.errors import InputError
from grafiqs.evaluation.edc import ORIENTATIONS
from grafiqs.experiments.demo import DEMO_WEIGHTS
from grafiqs.models.loading import load_backbone
from grafiqs.quality.baselines import (
    BASELINES,
    SERFIQ,
    BNSLoss,
    EmbeddingNorm,
    FaceQAN,
    QualityMethod,
    robustness_quality,
)
from grafiqs.quality.scorer import GraFIQsScorer


def crop(name: str) -> torch.Tensor:
    image = cv2.imread(str(GOLDEN / "images" / name))
    return normalize(torch.from_numpy(image).permute(2, 0, 1)[None])


@pytest.fixture(scope="module")
def demo_model():
    return load_backbone(None, DEMO_WEIGHTS)


@pytest.fixture(scope="module")
def clean_and_noised() -> torch.Tensor:
    """The clean golden crop and the same crop under heavy Gaussian noise (std 0.8 in [-1, 1] units)."""
    clean = crop("clean.png")
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    return torch.cat([clean, (clean + 0.8 * noise).clamp(-1, 1)])


@pytest.fixture(scope="module")
def model():
    return tiny_iresnet()


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(1)) * 2 - 1


# SER-FIQ

def test_serfiq_fast_path_equals_full_passes_with_dropout(model, images):
    passes, seed = 8, 7
    reference = copy.deepcopy(model)
    reference.dropout = nn.Dropout(0.5).train()  # the model's own rate is 0, so the authors' 0.5 applies
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        naive = torch.stack([reference(images[:1]) for _ in range(passes)], dim=1)
    method = SERFIQ(passes=passes, seed=seed)
    assert method.rate(model) == 0.5
    fast = method.embeddings(model, images[:1])
    torch.testing.assert_close(fast, naive)
    distance = torch.pdist(F.normalize(naive[0], dim=1)).mean()
    torch.testing.assert_close(method(model, images[:1]), 2 / (1 + torch.exp(distance[None])))


def test_serfiq_scores_do_not_depend_on_the_batch(model, images):
    method = SERFIQ(passes=8)
    together = method(model, images)
    alone = torch.cat([method(model, images[i:i + 1]) for i in range(len(images))])
    torch.testing.assert_close(together, alone)
    assert together.shape == (3,)


def test_serfiq_rate_is_the_models_own_when_it_has_one(model):
    model = copy.deepcopy(model)
    model.dropout.p = 0.2
    assert SERFIQ().rate(model) == 0.2
    assert SERFIQ(dropout=0.4).rate(model) == 0.4


def test_robustness_quality_of_identical_passes_is_one():
    embeddings = torch.randn(2, 1, 8).expand(2, 5, 8)
    torch.testing.assert_close(robustness_quality(embeddings), torch.ones(2))


def test_serfiq_prefers_the_clean_crop(demo_model, clean_and_noised):
    clean, noised = SERFIQ()(demo_model, clean_and_noised)
    assert clean > noised


# Embedding norm

def test_embedding_norm_is_the_norm_of_the_unnormalised_embedding(model, images):
    with torch.no_grad():
        embedding, _ = model.forward_stages(images)  # ends with the `features` BatchNorm1d, no L2 normalisation
    norms = EmbeddingNorm()(model, images)
    torch.testing.assert_close(norms, embedding.norm(dim=1))
    assert not torch.allclose(norms, torch.ones(3))


# FaceQAN

def test_faceqan_shape_determinism_and_formula(model, images):
    method = FaceQAN(copies=3, steps=2, seed=5)
    parts = method.components(model, images)
    assert all(value.shape == (3,) for value in parts.values())
    torch.testing.assert_close(method(model, images), parts["quality"], rtol=0, atol=0)
    assert not torch.equal(FaceQAN(copies=3, steps=2, seed=6)(model, images), parts["quality"])
    adversarial = (1 + parts["adversarial_mean"]) / 2 * (1 - parts["adversarial_std"]).clamp(0, 1)
    torch.testing.assert_close(parts["quality"], (adversarial * parts["flip_similarity"]) ** 5)


def test_faceqan_attack_lowers_the_similarity(model, images):
    noise_only = FaceQAN(copies=3, steps=1).components(model, images)["adversarial_mean"]
    attacked = FaceQAN(copies=3, steps=3).components(model, images)["adversarial_mean"]
    assert (attacked < noise_only).all()


def test_faceqan_flip_similarity(model, images):
    symmetric = (images + images.flip(-1)) / 2
    method = FaceQAN(copies=2, steps=1)
    torch.testing.assert_close(method.components(model, symmetric)["flip_similarity"], torch.ones(3))
    with torch.no_grad():
        expected = F.cosine_similarity(model(images), model(images.flip(-1)), dim=1)
    torch.testing.assert_close(method.components(model, images)["flip_similarity"], expected)


def test_faceqan_prefers_the_clean_crop(demo_model, clean_and_noised):
    clean, noised = FaceQAN(copies=3)(demo_model, clean_and_noised)
    assert clean > noised


# BNS loss

def test_bns_loss_is_the_grafiqs_scorers(model, images):
    expected = GraFIQsScorer(model)(images).bns_loss
    torch.testing.assert_close(BNSLoss()(model, images), expected)


# Registry

@pytest.mark.parametrize("cls, options", [
    (SERFIQ, {"passes": 4}),
    (EmbeddingNorm, {}),
    (FaceQAN, {"copies": 2, "steps": 1, "epsilon": 1e-3, "exponent": 5}),
    (BNSLoss, {}),
])
def test_each_method_is_built_from_its_options(cls, options, model, images):
    method = cls(**options)
    assert BASELINES[method.name] is cls and isinstance(method, QualityMethod) and method.orientation in ORIENTATIONS
    scores = method(model, images[:2])
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_registry_orientations():
    assert {name: cls.orientation for name, cls in BASELINES.items()} == {
        "serfiq": "higher_is_better", "embedding_norm": "higher_is_better",
        "faceqan": "higher_is_better", "bns_loss": "lower_is_better"}


def test_invalid_options_are_refused():
    with pytest.raises(InputError, match="at least 2 passes"):
        SERFIQ(passes=1)
    with pytest.raises(InputError, match="dropout must lie in"):
        SERFIQ(dropout=1.5)
    with pytest.raises(InputError, match="FaceQAN needs copies >= 2"):
        FaceQAN(epsilon=2.0)


# External score files

def write(tmp_path, lines: list[str]):
    path = tmp_path / "scores.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_external_scores_match_exact_then_trailing_parts(tmp_path):
    path = write(tmp_path, ["/data/lfw/images/a/a_0001.jpg 0.5", "b/b 0001.jpg 0.25", "/data/other/c_0001.jpg 2",
                            "/data/lfw/images/d/x.jpg 3", "/data/cfp/images/d/x.jpg 4", "y.jpg 5", "e/y.jpg 6"])
    names = ["c_0001.jpg", "a/a_0001.jpg", "/eval/b/b 0001.jpg", "lfw/images/d/x.jpg", "/data/cfp/images/d/x.jpg",
             "/eval/e/y.jpg", "y.jpg"]
    result = read_external_scores(path, "higher_is_better", names)
    assert result.names == names and result.orientation == "higher_is_better"
    assert result.scores.dtype == np.float64
    np.testing.assert_array_equal(result.scores, [2, 0.5, 0.25, 3, 4, 6, 5])


def test_external_scores_without_names_in_file_order(tmp_path):
    result = read_external_scores(write(tmp_path, ["z.jpg 1", "a.jpg -2.5"]), "lower_is_better")
    assert result.names == ["z.jpg", "a.jpg"] and result.orientation == "lower_is_better"
    np.testing.assert_array_equal(result.scores, [1, -2.5])


def test_external_scores_missing_images(tmp_path):
    path = write(tmp_path, ["a/1.jpg 1"])
    names = ["x/a/1.jpg"] + [f"b/{i}.jpg" for i in range(7)]  # b/1.jpg is not a/1.jpg
    with pytest.raises(InputError, match=r"7 of 8 images have no score, e\.g\. b/0\.jpg, b/1\.jpg, .*b/4\.jpg$"):
        read_external_scores(path, "higher_is_better", names)


def test_external_scores_duplicates_and_ambiguity(tmp_path):
    with pytest.raises(InputError, match="1 paths appear more than once, e.g. a/1.jpg"):
        read_external_scores(write(tmp_path, ["a/1.jpg 1", "b/1.jpg 2", "a/1.jpg 3"]), "higher_is_better")
    with pytest.raises(InputError, match="match several entries equally well"):
        read_external_scores(write(tmp_path, ["x/a/1.jpg 1", "y/a/1.jpg 2"]), "higher_is_better", ["a/1.jpg"])
    with pytest.raises(InputError, match="entries match more than one image, e.g. 1.jpg"):
        read_external_scores(write(tmp_path, ["1.jpg 1"]), "higher_is_better", ["x/1.jpg", "y/1.jpg"])


def test_external_scores_refuse_bad_orientation_and_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="orientation must be one of"):
        read_external_scores(write(tmp_path, ["a.jpg 1"]), "higher")
    with pytest.raises(InputError, match="cannot read score file"):
        read_external_scores(tmp_path / "absent.txt", "higher_is_better")
    with pytest.raises(InputError, match="expected '<path> <score>'"):
        read_external_scores(write(tmp_path, ["a.jpg one"]), "higher_is_better")
