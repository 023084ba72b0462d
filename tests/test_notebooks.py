"""The notebooks run top to bottom on the bundled model and a small ablation; they are committed without outputs."""
import os
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from grafiqs.experiments.benchmark import load_config, run_benchmark

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name: str, env: dict) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in notebook.cells if cell.cell_type == "code"), f"{name} must be committed without outputs"
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        for key, value in old.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    return notebook


def _images(notebook) -> int:
    return sum("image/png" in out.get("data", {}) for cell in notebook.cells for out in cell.get("outputs", []))


def test_quickstart_notebook_scores_and_shows_gradient_maps():
    notebook = _execute("01_quickstart.ipynb", {})
    assert _images(notebook) >= 1


@pytest.fixture(scope="module")
def small_ablation(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    config = {
        "name": "notebook", "output_dir": str(out),
        "models": [{"name": "demo", "weights": str(Path(__file__).resolve().parents[1] / "grafiqs/assets/demo_iresnet.ckpt")}],
        "sets": [{"name": "synthetic", "kind": "synthetic",
                  "synthetic": {"num_identities": 8, "kinds": ["blur", "occlusion", "dark"], "severities": [0, 2, 3]}}],
        "methods": {"grafiqs": {"losses": [{"terms": ["mean+var", "mean", "var"]}], "aggregations": ["l1"]}},
        "evaluation": {"fmrs": [1e-2], "limits": [0.3], "crfiqa_erc": False},
        "batch_size": 16, "num_workers": 0, "wandb": {"mode": "disabled"},
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    run_benchmark(load_config(out / "config.yaml"))
    return out


def test_ablation_notebook_reads_a_results_folder(small_ablation):
    notebook = _execute("02_ablations.ipynb", {"GRAFIQS_ABLATION_DIR": str(small_ablation)})
    assert _images(notebook) >= 2 and (small_ablation / "edc_notebook.png").exists()
