"""The one-command ablation: YAML -> scores of every variant -> EDC table, plots, W&B offline run."""
import csv
import json

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_iresnet
from grafiqs.data.verification import write_bin_pairs
from grafiqs.errors import InputError
from grafiqs.evaluation.report import RANDOM, SEVERITY
from grafiqs.experiments.ablation import load_config, run_ablation
from grafiqs.quality.groups import VariantScorer, loss_grid
from grafiqs.quality.scorer import GraFIQsScorer

OFFICIAL = "loss=mean+var,dist=mse,layers=all|group=image|agg=l1"


def _config(tmp_path, weights, **changes):
    config = {
        "name": "tiny",
        "output_dir": str(tmp_path / "out"),
        "weights": str(weights),
        "data": {"kind": "synthetic", "synthetic": {"num_identities": 3, "probes_per_identity": 1,
                                                    "kinds": ["blur", "occlusion"], "severities": [0, 2]}},
        "variants": {
            "losses": [{"terms": ["mean+var", "mean"], "distances": ["mse"], "layers": ["all"]},
                       {"terms": ["mean+var"], "distances": ["kl"], "layers": ["all"]}],
            "groups": ["image", "block2"],
            "aggregations": ["l1", "l2"],
            "parameter_groups": ["params:layer1", "params:fc"],
        },
        "evaluation": {"fmrs": [0.1], "limits": [0.2, 0.3]},
        "batch_size": 4,
        "num_workers": 0,
        "wandb": {"mode": "offline", "project": "grafiqs-tests"},
    }
    config.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def test_synthetic_ablation_writes_ranked_table_plots_scores_and_an_offline_wandb_run(tmp_path, tiny_weights):
    result = run_ablation(_config(tmp_path, tiny_weights))
    out = tmp_path / "out"
    header, rows = result["header"], result["rows"]
    names = [r[0] for r in rows]
    # 3 loss variants x (2 groups x 2 aggs + bns_loss) + the official loss x 2 weight groups x 2 aggs, plus 2 references
    assert len(rows) == 3 * 5 + 4 + 2 and {RANDOM, SEVERITY, OFFICIAL} <= set(names)
    key = header.index("pauc_norm@fmr1e-1,discard0.3")
    finite = [r[key] for r in rows if not np.isnan(r[key])]
    assert finite == sorted(finite)
    erc = [r[header.index("erc_auc_crfiqa@fmr0.1")] for r in rows if not r[0].startswith("reference")]
    assert all(np.isnan(v) or v >= 0 for v in erc) and any(np.isfinite(erc))  # NaN where no impostor is left
    with result["table"].open() as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    assert "| order |" in result["markdown"].read_text()
    assert [p.name for p in result["plots"]] == ["edc_fmr0.1.png"] and result["plots"][0].stat().st_size > 1000
    # per-image columns: 3 identities x (1 enrolment + 1 clean probe + 2 kinds x severity 2)
    with (out / "scores.csv").open() as handle:
        scores = list(csv.DictReader(handle))
    assert len(scores) == 3 * 4 and {s["degradation"] for s in scores} == {"none", "blur", "occlusion"}
    assert all(float(s["loss=mean+var,dist=mse,layers=all|group=params:fc|agg=l1"]) == 0.0 for s in scores)
    # the official column is the official scorer's image magnitude
    images = torch.stack([torch.from_numpy(cv2.imread(str(out / "images" / s["image"]))).permute(2, 0, 1) for s in scores])
    official = GraFIQsScorer(tiny_iresnet())((images.float() / 255 - 0.5) / 0.5).scores["image"].numpy()
    np.testing.assert_allclose([float(s[OFFICIAL]) for s in scores], official, rtol=1e-4)
    assert np.load(out / "embeddings.npy").shape == (12, 32)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 12 and summary["loss_variants"] == 3
    run_dir = result["wandb_dir"]
    assert run_dir is not None and run_dir.name.startswith("offline-run-") and list(run_dir.glob("*.wandb"))


def test_cross_model_embeddings_and_bin_pair_sets(tmp_path, tiny_weights):
    other = tiny_iresnet(num_features=16)
    other_path = tmp_path / "other.pth"
    torch.save(other.state_dict(), other_path)
    rng = np.random.default_rng(0)
    encoded = [cv2.imencode(".png", rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))[1].tobytes() for _ in range(8)]
    write_bin_pairs(tmp_path / "toy.bin", encoded, [True, False, True, False])
    config = _config(tmp_path, tiny_weights, data={"kind": "bin", "path": str(tmp_path / "toy.bin")},
                     comparison_model={"weights": str(other_path)}, wandb={"mode": "disabled"},
                     variants={"groups": ["image"]}, evaluation={"fmrs": [0.5], "limits": [0.3], "crfiqa_erc": False})
    result = run_ablation(config)
    assert np.load(tmp_path / "out" / "embeddings.npy").shape == (8, 16)  # the comparison model's embeddings
    assert {r[0] for r in result["rows"]} == {OFFICIAL, "loss=mean+var,dist=mse,layers=all|bns_loss", RANDOM}
    assert result["wandb_dir"] is None


@pytest.mark.parametrize("text, message", [
    ("batchsize: 3\n", "Option 'batchsize' is not accepted"),  # top level
    ("variants: {group: [image]}\n", "'variants' does not accept option 'group'"),  # nested section
    ("variants: {losses: [{term: [mean]}]}\n", "Option 'term' is not accepted"),  # inside a list entry
    ("data: {kind: synthetic, synthetic: {num_identitie: 3}}\n", "does not accept option 'synthetic.num_identitie'"),
    ("evaluation: {fmrs: [often]}\n", "evaluation.fmrs"),  # a wrong type
    ("data: {kind: synthetc}\n", "Expected a typing.Literal"),
])
def test_every_key_at_every_level_of_the_config_is_checked(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text("weights: x\noutput_dir: o\ndata: {kind: synthetic}\n" + text)
    with pytest.raises(InputError, match=message):
        load_config(bad)


def test_config_errors_are_clear(tmp_path, tiny_weights):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"!!python/object/apply:os.system ['touch {tmp_path / 'pwned'}']\n")
    with pytest.raises(InputError, match="could not determine a constructor"):
        load_config(bad)
    assert not (tmp_path / "pwned").exists()
    config = _config(tmp_path, tiny_weights, data={"kind": "lfw", "images": "x"})
    with pytest.raises(InputError, match="needs data.pairs"):
        run_ablation(config)


def test_command_line_overrides_reach_nested_keys(tmp_path, tiny_weights):
    _config(tmp_path, tiny_weights)
    config = load_config(tmp_path / "config.yaml", ["--data.synthetic.num_identities", "7", "--wandb.mode", "disabled"])
    assert config.data.synthetic.num_identities == 7 and config.wandb.mode == "disabled"
    assert config.variants.groups == ["image", "block2"]  # the rest of the file is kept


def test_parameter_losses_restrict_the_weight_pass_only():
    model = tiny_iresnet()
    images = torch.rand(3, 3, 112, 112) * 2 - 1
    losses = loss_grid(["mean+var", "var"], ["mse"], ["all"])
    full = VariantScorer(model, losses, groups=["image", "params:layer2"])(images).columns
    restricted = VariantScorer(model, losses, groups=["image", "params:layer2"], parameter_losses=losses[:1])(images).columns
    assert set(full) - set(restricted) == {"loss=var,dist=mse,layers=all|group=params:layer2|agg=l1"}
    for name, values in restricted.items():
        torch.testing.assert_close(values, full[name])
