"""`python score.py` without arguments: the bundled model on the synthetic verification demo set."""
import csv
import dataclasses

import pytest

from grafiqs.cli.score import main
from grafiqs.experiments import demo

# The demo's set with a fifth of its identities (every kind and severity of probe kept): 460 faces, not 2,300,
# drawn and scored in a fifth of the time; the rest of the demo runs as shipped.
SMALL_DEMO_SET = dataclasses.replace(demo.DEMO_SET, num_identities=20)


def test_demo_scores_the_synthetic_set_and_reports_groups_against_references(tmp_path, monkeypatch, capsys):
    assert demo.DEMO_SET.size > SMALL_DEMO_SET.size >= 20
    monkeypatch.setattr(demo, "DEMO_SET", SMALL_DEMO_SET)
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    out = tmp_path / "outputs" / "demo"
    scored = (out / "GraFIQs_image.txt").read_text().splitlines()
    assert len(scored) == SMALL_DEMO_SET.size == 460
    with (out / "scores.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"degradation", "severity", "identity", "role", "status"} <= set(rows[0])
    assert {r["degradation"] for r in rows} >= {"none", "blur", "occlusion", "dark"} and {r["severity"] for r in rows} == {"0", "1", "2", "3"}
    assert (out / "edc.png").stat().st_size > 10_000 and (out / "embeddings.npy").exists()
    printed = capsys.readouterr().out
    for name in ("GraFIQs image", "GraFIQs block4", "reference: random", "reference: known severity"):
        assert name in printed and name in (out / "demo_table.md").read_text()
    random_row = next(line for line in printed.splitlines() if line.startswith("reference: random"))
    assert float(random_row.split()[2]) == pytest.approx(1.0, abs=0.1)  # random discarding gains nothing
