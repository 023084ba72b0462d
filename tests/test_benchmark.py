"""The comparison-table runner: every set format, FR models as judges, baselines, score files, IJB-C templates;
numbers checked against an EDC written here from the ISO definition; cache, resume and two processes."""
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_iresnet
from grafiqs.faces.align import ARCFACE_TEMPLATE
from grafiqs.data.ijbc import synthetic_ijbc
from grafiqs.data.verification import write_bin_pairs
from grafiqs.errors import InputError
from grafiqs.evaluation.report import RANDOM, SEVERITY
from grafiqs.experiments.benchmark import load_config, run_benchmark
from grafiqs.quality.scorer import GraFIQsScorer

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_ROWS = [f"GraFIQs {g}" for g in ("image", "block1", "block2", "block3", "block4")]
BASELINE_ROWS = ["SER-FIQ", "embedding norm (MagFace)", "FaceQAN", "BNS loss"]
SETS = ["synthetic", "bin", "xqlfw", "lfw_pairs", "pair_list", "adience", "ijbc"]


def _noise(rng, size=112):
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _write(path: Path, image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def _lfw_layout(root: Path, rng, people: int, per_person: int) -> list[tuple]:
    """<root>/<name>/<name>_<idx:04d>.jpg and LFW-style pair tuples (genuine: name i j; impostor: a i b j)."""
    names = [f"person_{p}" for p in range(people)]
    for name in names:
        for index in range(1, per_person + 1):
            _write(root / name / f"{name}_{index:04d}.jpg", _noise(rng))
    genuine = [(n, 1, j) for n in names for j in range(2, per_person + 1)]
    impostor = [(a, 1, b, 2) for a in names for b in names if a < b]
    return genuine + impostor


def make_world(folder: Path) -> dict:
    """Small sets in every supported layout, two tiny FR models and another method's score file."""
    rng = np.random.default_rng(7)
    world = {}
    encoded = [cv2.imencode(".png", _noise(rng))[1].tobytes() for _ in range(24)]
    write_bin_pairs(folder / "toy.bin", encoded, [i % 2 == 0 for i in range(12)])
    world["bin"] = {"name": "bin", "kind": "bin", "path": str(folder / "toy.bin")}

    pairs = _lfw_layout(folder / "xqlfw", rng, 4, 3)
    (folder / "xqlfw_pairs.txt").write_text("header, not folds\n" + "".join(" ".join(map(str, p)) + "\n" for p in pairs))
    world["xqlfw"] = {"name": "xqlfw", "kind": "xqlfw", "pairs": str(folder / "xqlfw_pairs.txt"),
                      "images": str(folder / "xqlfw")}
    pairs = _lfw_layout(folder / "lfw", rng, 4, 3)
    genuine = [p for p in pairs if len(p) == 3][:6]
    impostor = [p for p in pairs if len(p) == 4][:6]
    (folder / "pairs.txt").write_text("1 6\n" + "".join(" ".join(map(str, p)) + "\n" for p in genuine + impostor))
    world["lfw_pairs"] = {"name": "lfw_pairs", "kind": "lfw", "pairs": str(folder / "pairs.txt"),
                          "images": str(folder / "lfw")}

    names = [f"img{i}.png" for i in range(10)]
    for name in names:
        _write(folder / "crfiqa" / "images" / name, _noise(rng))
    lines = [f"{names[i]} {names[(i + 1) % 10]} {i % 2}" for i in range(10)] + [f"{names[i]} {names[i + 2]} 1" for i in range(4)]
    (folder / "crfiqa" / "pair_list.txt").write_text("\n".join(lines) + "\n")
    world["pair_list"] = {"name": "pair_list", "kind": "pair_list", "dir": str(folder / "crfiqa")}

    for identity in range(4):
        for index in range(3):
            _write(folder / "adience" / f"id{identity}" / f"{index}.jpg", _noise(rng))
    world["adience"] = {"name": "adience", "kind": "identity_folder", "folder": str(folder / "adience")}

    meta = folder / "ijbc" / "meta"
    faces, _ = synthetic_ijbc(meta, num_images=60, num_templates=12, num_pairs=120, seed=3)
    landmark_lines = []
    for line in faces.read_text().splitlines():
        name = line.split()[0]
        _write(folder / "ijbc" / "loose_crop" / name, _noise(rng, 150))
        points = ARCFACE_TEMPLATE + rng.uniform(10, 30, 2)  # a face somewhere in the loose crop
        landmark_lines.append(f"{name} " + " ".join(f"{v:.2f}" for v in points.ravel()) + " 0.99")
    (meta / "ijbc_name_5pts_score.txt").write_text("\n".join(landmark_lines) + "\n")
    world["ijbc"] = {"name": "ijbc", "kind": "ijbc", "meta": str(meta), "images": str(folder / "ijbc" / "loose_crop")}

    world["synthetic"] = {"name": "synthetic", "kind": "synthetic",
                          "synthetic": {"num_identities": 3, "kinds": ["blur", "occlusion"], "severities": [0, 2]}}
    # another method's scores for the XQLFW images, named by their last two path parts, as CR-FIQA writes them
    xqlfw_images = sorted((folder / "xqlfw").rglob("*.jpg"))
    (folder / "crfiqa_xqlfw.txt").write_text("".join(f"xqlfw/{p.parent.name}/{p.name} {rng.random():.6f}\n"
                                                     for p in xqlfw_images))
    torch.save(tiny_iresnet().state_dict(), folder / "tiny.pth")
    torch.save(tiny_iresnet(num_features=16).state_dict(), folder / "other.pth")
    return world


def benchmark_config(folder: Path, world: dict, sets=SETS, **changes) -> Path:
    config = {
        "name": "formats",
        "output_dir": str(folder / "out"),
        "sets": [world[name] for name in sets],
        "models": [{"name": "tiny", "weights": str(folder / "tiny.pth")},
                   {"name": "other", "weights": str(folder / "other.pth"), "flip": "sum"}],
        "methods": {
            "quality_model": "tiny",
            "baselines": ["serfiq", "embedding_norm", "faceqan", "bns_loss"],
            "serfiq": {"passes": 3}, "faceqan": {"copies": 2, "steps": 2},
            "external": [{"name": "CR-FIQA (file)", "set": "xqlfw", "path": str(folder / "crfiqa_xqlfw.txt"),
                          "orientation": "higher_is_better"}],
        },
        "evaluation": {"fmrs": [0.1], "limits": [0.2, 0.3], "metrics": ["pauc_norm", "pauc_raw"]},
        "batch_size": 8,
        "num_workers": 0,
        "wandb": {"mode": "offline", "project": "grafiqs-tests"},
    }
    config.update(changes)
    path = folder / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    folder = tmp_path_factory.mktemp("benchmark")
    world = make_world(folder)
    config = load_config(benchmark_config(folder, world))
    return folder, world, config, run_benchmark(config)


def _long(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _pass_values(result: dict, key: str) -> dict:
    return dict(np.load(Path(result["summary"]["passes"][key]) / "values.npz"))


# --------------------------------------------------------------------------- an EDC from the definition


def independent_pauc(similarity, mated, quality, fmr: float, limit: float) -> tuple[float, float]:
    """(raw, normalised) pAUC: threshold = the (floor(fmr * n)+1)-th largest non-mated score (accept iff score >
    threshold); mated pairs discarded lowest quality first, a tie group at once; left-step area up to `limit`."""
    impostors = sorted(similarity[~mated], reverse=True)
    k = math.floor(fmr * len(impostors) * (1 + 1e-12))
    threshold = impostors[k] if k < len(impostors) else -math.inf
    genuine = [(q, s <= threshold) for q, s, m in zip(quality, similarity, mated) if m]
    n = len(genuine)
    points = [(0.0, sum(e for _, e in genuine) / n)]
    for level in sorted({q for q, _ in genuine}):
        kept = [e for q, e in genuine if q > level]
        points.append(((n - len(kept)) / n, sum(kept) / len(kept) if kept else 0.0))
    area = 0.0
    for (start, value), (end, _) in zip(points, points[1:]):
        area += value * max(0.0, min(end, limit) - min(start, limit))
    return area, area / (points[0][1] * limit) if points[0][1] > 0 else math.nan


def _cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def independent_ijbc(meta: Path, embeddings, quality):
    """Template embedding = sum over media of the media's mean image embedding; template quality = its worst image;
    pair quality = the worse template (quality "higher is better")."""
    faces = [line.split() for line in (meta / "ijbc_face_tid_mid.txt").read_text().splitlines()]
    templates = {}
    for row, (_, template, media) in enumerate(faces):
        templates.setdefault(int(template), {}).setdefault(int(media), []).append(row)
    vector = {t: sum(np.mean([embeddings[r] for r in rows], axis=0) for rows in media.values())
              for t, media in templates.items()}
    worst = {t: min(quality[r] for rows in media.values() for r in rows) for t, media in templates.items()}
    pairs = [tuple(map(int, line.split())) for line in (meta / "ijbc_template_pair_label.txt").read_text().splitlines()]
    similarity = np.array([_cosine(vector[a], vector[b]) for a, b, _ in pairs])
    return similarity, np.array([label == 1 for _, _, label in pairs]), np.array([min(worst[a], worst[b]) for a, b, _ in pairs])


# --------------------------------------------------------------------------- the table


def test_one_config_gives_every_row_and_column_of_every_fr_models_table(formats):
    folder, world, config, result = formats
    records = _long(result["long"])
    assert {r["model"] for r in records} == {"tiny", "other"} and {r["set"] for r in records} == set(SETS)
    methods = {r["method"] for r in records}
    expected = {"CR-FIQA (file)", *BASELINE_ROWS, *OFFICIAL_ROWS, "GraFIQs BNS loss", RANDOM, SEVERITY,
                *(f"{row} (larger = better)" for row in OFFICIAL_ROWS)}
    assert methods == expected
    assert {r["set"] for r in records if r["method"] == "CR-FIQA (file)"} == {"xqlfw"}
    assert {r["set"] for r in records if r["method"] == SEVERITY} == {"synthetic"}  # known only for synthetic sets
    for model in ("tiny", "other"):
        for metric in ("pauc_norm", "pauc_raw"):
            for limit in ("0.2", "0.3"):
                stem = f"{model}_fmr1e-1_discard{limit}_{metric}"
                with open(folder / "out" / "tables" / f"{stem}.csv", newline="") as handle:
                    table = list(csv.reader(handle))
                assert table[0] == ["method", *SETS, "mean"]
                assert {row[0] for row in table[1:]} == expected
                external = next(row for row in table if row[0] == "CR-FIQA (file)")
                assert external[SETS.index("xqlfw") + 1] != "" and external[-1] == ""  # one set only: no mean
                assert (folder / "out" / "tables" / f"{stem}.tex").read_text().count(r"\textbf{") >= len(SETS)
    markdown = result["markdown"].read_text()
    assert "## other, FMR 1e-1, discard 0.3, pauc_norm" in markdown and "| GraFIQs image |" in markdown
    assert [p.name for p in result["plots"]] == ["edc_tiny_fmr0.1.png", "edc_other_fmr0.1.png"]
    ranked = (folder / "out" / "ranked" / "ijbc__other.md").read_text()
    assert "SER-FIQ" in ranked and "erc" in ranked
    run_dir = result["wandb_dir"]
    assert run_dir.name.startswith("offline-run-") and list(run_dir.glob("*.wandb"))


@pytest.mark.parametrize("model, set_name, method", [
    ("other", "pair_list", "GraFIQs image"),
    ("tiny", "xqlfw", "CR-FIQA (file)"),
    ("tiny", "adience", "SER-FIQ"),
    ("other", "bin", "GraFIQs block2 (larger = better)"),
])
def test_pair_set_numbers_equal_an_edc_written_from_the_definition(formats, model, set_name, method):
    folder, world, config, result = formats
    from grafiqs.experiments.benchmark import load_set

    eset = load_set(next(s for s in config.sets if s.name == set_name), folder / "out" / "cache")
    embeddings = _pass_values(result, f"{set_name}/{model}/embedding")["embedding"]
    first, second = eset.images.pairs[:, 0], eset.images.pairs[:, 1]
    similarity = np.array([_cosine(embeddings[a], embeddings[b]) for a, b in zip(first, second)])
    if method == "CR-FIQA (file)":
        by_path = dict(line.rsplit(" ", 1) for line in (folder / "crfiqa_xqlfw.txt").read_text().splitlines())
        per_image = np.array([float(by_path["/".join(Path(p).parts[-3:])]) for p in eset.images.paths])
    elif method == "SER-FIQ":
        per_image = _pass_values(result, f"{set_name}/tiny/serfiq")["quality"]
    else:
        group = method.split()[1]
        magnitude = _pass_values(result, f"{set_name}/tiny/grafiqs")[f"loss=mean+var,dist=mse,layers=all|group={group}|agg=l1"]
        per_image = magnitude if "larger = better" in method else -magnitude
    quality = np.minimum(per_image[first], per_image[second])
    raw, normalised = independent_pauc(similarity, eset.images.issame, quality, 0.1, 0.3)
    record = next(r for r in _long(result["long"]) if (r["model"], r["set"], r["method"], r["limit"]) ==
                  (model, set_name, method, "0.3"))
    assert float(record["pauc_raw"]) == pytest.approx(raw, abs=1e-12)
    assert float(record["pauc_norm"]) == pytest.approx(normalised, abs=1e-9, nan_ok=True)


@pytest.mark.parametrize("model, method", [("tiny", "GraFIQs image"), ("other", "embedding norm (MagFace)")])
def test_ijbc_template_numbers_equal_the_protocol_written_out_here(formats, model, method):
    folder, world, config, result = formats
    embeddings = _pass_values(result, f"ijbc/{model}/embedding")["embedding"]
    if method == "GraFIQs image":
        quality = -_pass_values(result, "ijbc/tiny/grafiqs")["loss=mean+var,dist=mse,layers=all|group=image|agg=l1"]
    else:
        quality = _pass_values(result, "ijbc/tiny/embedding_norm")["quality"]
    similarity, mated, pair_quality = independent_ijbc(Path(world["ijbc"]["meta"]), embeddings, quality)
    for limit in (0.2, 0.3):
        raw, normalised = independent_pauc(similarity, mated, pair_quality, 0.1, limit)
        record = next(r for r in _long(result["long"]) if (r["model"], r["set"], r["method"], r["limit"]) ==
                      (model, "ijbc", method, f"{limit:g}"))
        assert float(record["pauc_raw"]) == pytest.approx(raw, abs=1e-7)  # float32 template similarities
        assert float(record["pauc_norm"]) == pytest.approx(normalised, abs=1e-6, nan_ok=True)


def test_ijbc_images_are_aligned_from_the_landmark_file_and_scored_as_score_py_would(formats):
    folder, world, config, result = formats
    from grafiqs.faces.align import align_face, read_landmarks_file

    landmarks = read_landmarks_file(Path(world["ijbc"]["meta"]) / "ijbc_name_5pts_score.txt")
    names = ["1.jpg", "2.jpg", "3.jpg"]
    crops = [align_face(cv2.imread(str(Path(world["ijbc"]["images"]) / n)), landmarks[n]) for n in names]
    images = torch.stack([torch.from_numpy(c).permute(2, 0, 1) for c in crops]).float() / 255 * 2 - 1
    expected = GraFIQsScorer(tiny_iresnet())(images).scores["image"].numpy()
    scored = _pass_values(result, "ijbc/tiny/grafiqs")["loss=mean+var,dist=mse,layers=all|group=image|agg=l1"][:3]
    np.testing.assert_allclose(scored, expected, rtol=1e-5)


def test_per_image_scores_and_the_flip_option(formats):
    folder, world, config, result = formats
    with open(folder / "out" / "scores" / "synthetic.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 4 and {r["degradation"] for r in rows} == {"none", "blur", "occlusion"}
    assert {"SER-FIQ", "GraFIQs image", "FaceQAN"} <= set(rows[0])
    flipped = _pass_values(result, "bin/other/embedding")["embedding"]
    assert flipped.shape == (24, 16)  # `sum`: the mirrored image's embedding added, same width
    summary = json.loads((folder / "out" / "summary.json").read_text())
    assert summary["sets"]["ijbc"]["images"] == 60 and summary["sets"]["ijbc"]["comparisons"] == 120


# --------------------------------------------------------------------------- cache, resume, processes


def _small(folder: Path, world: dict, name: str, **changes) -> Path:
    changes.setdefault("methods", {"quality_model": "tiny", "baselines": ["embedding_norm"],
                                   "grafiqs": {"groups": ["image", "block4"]}})
    changes.setdefault("models", [{"name": "tiny", "weights": str(folder / "tiny.pth")}])
    changes.setdefault("wandb", {"mode": "disabled"})
    return benchmark_config(folder, world, sets=["bin"], name=name, output_dir=str(folder / name), **changes)


# benchmark.py, whose second pass waits after its first logged batch (until a signal stops it) once it has
# touched the file named by argv[1]: an interruption there does not depend on how fast the machine scores.
PAUSED_BENCHMARK = """
import runpy, sys, time
from pathlib import Path
from grafiqs.experiments import passes

sys.argv = sys.argv[1:]  # [benchmark.py, the file to touch, its arguments]
ready, writers, original = Path(sys.argv.pop(1)), [], passes.PassLogWriter.write_on_batch_end

def write_on_batch_end(self, *args, **kwargs):
    original(self, *args, **kwargs)
    if self not in writers:
        writers.append(self)
    if len(writers) == 2:
        ready.touch()
        time.sleep(600)

passes.PassLogWriter.write_on_batch_end = write_on_batch_end
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run_script(*arguments, pause_in_second_pass: Path | None = None, **kwargs):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = [str(ROOT / "benchmark.py")]
    if pause_in_second_pass:
        script = ["-c", PAUSED_BENCHMARK, str(ROOT / "benchmark.py"), str(pause_in_second_pass)]
    return subprocess.Popen([sys.executable, *script, *arguments], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _numbers(path: Path) -> list[tuple]:
    return [(r["model"], r["set"], r["method"], r["limit"], r["pauc_norm"], r["pauc_raw"]) for r in _long(path)]


@pytest.fixture(scope="module")
def single(formats):
    """The small benchmark run in one process, uninterrupted: the table the other runs must give."""
    folder, world, _, _ = formats
    return run_benchmark(load_config(_small(folder, world, "single")))


def test_two_processes_give_the_table_of_one(formats, single):
    folder, world, _, _ = formats
    process = _run_script("--config", str(_small(folder, world, "double")), "--devices", "2", "--accelerator", "cpu")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    assert _numbers(folder / "double" / "results_long.csv") == _numbers(single["long"])


def test_an_interrupted_benchmark_resumes_without_rescoring_finished_passes(formats, single, capsys):
    folder, world, _, _ = formats
    config = _small(folder, world, "interrupted", batch_size=1)
    cache = folder / "interrupted" / "cache"
    ready = folder / "interrupted-ready"
    process = _run_script("--config", str(config), pause_in_second_pass=ready)

    def in_a_later_pass() -> bool:  # a pass is finished and the next one has logged a batch: work is left
        started = [log.parents[1] for log in cache.glob("*/*/*/.grafiqs/rank0.jsonl") if log.stat().st_size]
        return any((folder / "values.npz").exists() for folder in cache.glob("*/*/*")) and any(
            not (folder / "values.npz").exists() for folder in started)

    deadline = time.monotonic() + 600  # a guard only: the process waits there for the signal
    while not ready.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    if not ready.exists():
        process.kill()
        pytest.fail(f"the benchmark never reached its second pass:\n{process.communicate()[0][-3000:]}")
    assert in_a_later_pass()
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, output
    assert "rerun the same command to resume" in output
    finished = {p: p.stat().st_mtime_ns for p in cache.glob("*/*/*/values.npz")}
    assert finished and len(finished) < 3  # embedding, grafiqs, embedding norm

    result = run_benchmark(load_config(config))
    printed = capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # loaded, not recomputed
    assert printed.count("pass ") == 3 - len(finished)
    assert _numbers(result["long"]) == _numbers(single["long"])
    again = run_benchmark(load_config(config))  # a second run with a finished cache scores nothing
    assert "pass " not in capsys.readouterr().out and _numbers(again["long"]) == _numbers(result["long"])


def test_a_second_config_reuses_the_passes_it_shares(formats, single, capsys):
    folder, world, _, _ = formats
    shared = str(folder / "single" / "cache")
    grown = _small(folder, world, "grown", cache_dir=shared, methods={
        "quality_model": "tiny", "grafiqs": {"groups": ["image", "block4"]},
        "baselines": ["embedding_norm", "serfiq"], "serfiq": {"passes": 3}})
    run_benchmark(load_config(grown))
    printed = capsys.readouterr().out
    assert printed.count("pass ") == 1 and "serfiq" in printed  # only the new baseline


# --------------------------------------------------------------------------- the config


@pytest.mark.parametrize("text, message", [
    ("batchsize: 3\n", "Option 'batchsize' is not accepted"),  # top level
    ("methods: {grafiqs: {group: [image]}}\n", "Option 'group' is not accepted"),  # nested section
    ("methods: {grafiqs: {losses: [{term: [mean]}]}}\n", "Option 'term' is not accepted"),  # inside a list entry
    ("methods: {serfiq: {pases: 3}}\n", "pases"),  # a baseline's options
    ("methods: {serfiq: {passes: 1}}\n", "at least 2 passes"),
    ("methods: {baselines: [magface]}\n", "magface"),
    ("evaluation: {fmrs: [often]}\n", "evaluation.fmrs"),  # a wrong type
    ("sets: [{name: a, kind: synthetc}]\n", "Expected a typing.Literal"),
    ("sets: [{name: a, kind: bin, pth: x}]\n", "Option 'pth' is not accepted"),
    ("models: [{name: m, weights: w, flip: mirror}]\n", "Expected a typing.Literal"),
])
def test_every_key_at_every_level_of_the_config_is_checked(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    base = {"output_dir": "o", "sets": [{"name": "s", "kind": "synthetic"}], "models": [{"name": "m", "weights": "w"}]}
    override = yaml.safe_load(text)
    bad.write_text(yaml.safe_dump({**base, **override}))
    with pytest.raises(InputError, match=message):
        load_config(bad)


@pytest.mark.parametrize("change, message", [
    ({"sets": [{"name": "s", "kind": "synthetic"}, {"name": "s", "kind": "bin", "path": "x"}]}, "'s' is given twice"),
    ({"models": [{"name": "m", "weights": "w", "judge": False}]}, "no model has judge: true"),
    ({"methods": {"quality_model": "nobody"}}, "quality_model 'nobody' is not one of the models"),
    ({"methods": {"external": [{"name": "x", "set": "lfw", "path": "p", "orientation": "higher_is_better"}]}},
     "set 'lfw' is not one of the sets"),
    ({"sets": [{"name": "..", "kind": "synthetic"}]}, "starts with a dot"),
    ({"methods": {"external": [{"name": "SER-FIQ", "set": "s", "path": "p", "orientation": "higher_is_better"}]}},
     "the name is another row's"),
])
def test_names_are_checked_before_anything_runs(tmp_path, change, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "o"), "sets": [{"name": "s", "kind": "synthetic"}],
                                    "models": [{"name": "m", "weights": "w"}], **change}))
    with pytest.raises(InputError, match=message):
        load_config(path)
    assert not (tmp_path / "o").exists()


def test_config_errors_are_clear(tmp_path, tiny_weights):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"!!python/object/apply:os.system ['touch {tmp_path / 'pwned'}']\n")
    with pytest.raises(InputError, match="could not determine a constructor"):
        load_config(bad)
    assert not (tmp_path / "pwned").exists()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "o"), "sets": [{"name": "l", "kind": "lfw", "images": "x"}],
                                    "models": [{"name": "m", "weights": str(tiny_weights)}], "wandb": {"mode": "disabled"}}))
    with pytest.raises(InputError, match="set l: kind lfw needs pairs"):
        run_benchmark(load_config(path))


def test_command_line_overrides_reach_nested_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"output_dir": "o", "sets": [{"name": "s", "kind": "synthetic"}],
                                    "models": [{"name": "m", "weights": "w"}],
                                    "methods": {"grafiqs": {"groups": ["image", "block2"]}}}))
    config = load_config(path, ["--methods.serfiq.passes", "7", "--wandb.mode", "disabled", "--devices", "2"])
    assert config.methods.serfiq.passes == 7 and config.wandb.mode == "disabled" and config.devices == 2
    assert config.methods.grafiqs.groups == ["image", "block2"]  # the rest of the file is kept


OVERLAY_BASES = {"depth_wide_sets.yaml": "depth.yaml"}  # configs given after another with a second --config


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "benchmark").glob("*.yaml"))
                         + sorted((ROOT / "configs" / "ablation").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    base = OVERLAY_BASES.get(path.name)  # an overlay is checked on top of the config it is documented with
    config = load_config(path) if base is None else load_config(path.parent / base, ["--config", str(path)])
    assert config.sets and config.models
    if base is not None:
        assert config.sets != load_config(path.parent / base).sets  # the overlay changed what it is there for
