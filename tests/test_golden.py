"""The scorer reproduces the authors' GraFIQs numbers (tests/data/golden) within 1e-3 relative."""
import pytest
import torch

from conftest import GOLDEN, GOLDEN_GROUPS, assert_close_to_golden
from grafiqs.cli.score import main
from grafiqs.data.decode import normalize, read_image, to_model_tensor
from grafiqs.io.score_files import read_score_file
from grafiqs.quality.scorer import GraFIQsScorer


@pytest.mark.parametrize("mode", ["bgr", "rgb"])
@pytest.mark.parametrize("batch_size", [1, 7])
def test_library_api_matches_golden(golden_model, golden_expected, mode, batch_size):
    scorer = GraFIQsScorer(golden_model)
    names = golden_expected["meta"]["scored_images"]
    images = torch.stack([to_model_tensor(read_image(GOLDEN / "images" / n, bgr2rgb=mode == "rgb")) for n in names])
    for start in range(0, len(names), batch_size):
        result = scorer(normalize(images[start : start + batch_size]))
        for row, name in enumerate(names[start : start + batch_size]):
            expected = golden_expected["scores"][mode][name]
            for group in GOLDEN_GROUPS:
                assert_close_to_golden(result.scores[group][row].item(), expected[group], f"{mode} {name} {group}")
            assert_close_to_golden(result.bns_loss[row].item(), expected["bns_loss"], f"{mode} {name} bns_loss")
            assert result.embedding.shape == (len(result.bns_loss), 512)


def test_asked_groups_alone_match_golden(golden_model, golden_expected):
    """Groups without the image start the autograd graph at the earliest asked stage: same numbers."""
    names = golden_expected["meta"]["scored_images"][:7]
    images = torch.stack([to_model_tensor(read_image(GOLDEN / "images" / n)) for n in names])
    result = GraFIQsScorer(golden_model, groups=("block4", "block2"))(normalize(images))
    assert list(result.scores) == ["block4", "block2"]
    for row, name in enumerate(names):
        for group in result.scores:
            expected = golden_expected["scores"]["bgr"][name][group]
            assert_close_to_golden(result.scores[group][row].item(), expected, f"bgr {name} {group}")


@pytest.mark.parametrize("mode", ["bgr", "rgb"])
@pytest.mark.parametrize("batch_size", [1, 7])
def test_score_cli_matches_golden(golden_images, golden_weights, golden_expected, tmp_path, mode, batch_size):
    args = ["--image-path", str(golden_images), "--output-dir", str(tmp_path), "--batch-size", str(batch_size)]
    args += ["--backbone", "iresnet50", "--weights", str(golden_weights)]
    args += ["--num-workers", "0"] + (["--bgr2rgb"] if mode == "rgb" else [])
    assert main(args) == 0
    for group in GOLDEN_GROUPS:
        scores = read_score_file(tmp_path / f"GraFIQs_{group}.txt")
        assert list(scores) == sorted(str(golden_images / n) for n in golden_expected["meta"]["scored_images"])
        for path, value in scores.items():
            name = path.rsplit("/", 1)[-1]
            assert_close_to_golden(value, golden_expected["scores"][mode][name][group], f"{mode} {name} {group}")
