"""The reference examples end to end, on tiny networks: short clients of the public API that write a
complete, self-consistent report folder (what ``docs/benchmarks_page.py`` reads).

Real backbones and images are exercised by running the examples themselves (see the benchmarks
page); this checks the plumbing and every field the benchmarks page and the docs rely on.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from .conftest import EXAMPLES, REPO, load_example, load_script, registered_tiny_source, write_class_folder

pytest.importorskip("matplotlib")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def example() -> Iterator[Any]:
    with registered_tiny_source("ref-test"):  # weights ignored: random init is enough here
        yield load_example("cats_vs_dogs")


def run_example(example: Any, folder: Path, out: Path, recipe: str, *extra: str) -> dict[str, Any]:
    argv = ["--data", str(folder), "--members", "ref-test:8,ref-test:6", "--recipe", recipe, "--epochs", "2"]
    assert example.main([*argv, "--resamples", "100", "--no-progress", "--out", str(out), *extra]) == 0
    return json.loads((out / "report.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize(("recipe", "named"), [("seed", "reference"), ("best", "fast"), ("full", "full")])
def test_each_recipe_writes_a_complete_report(tmp_path: Path, example: Any, recipe: str, named: str) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=20)
    out = tmp_path / "report"
    saved = run_example(example, folder, out, recipe)
    assert saved["split"] == {"train": 26, "val": 8, "test": 6}  # the notebook's 64/18/18 shares
    assert saved["recipe"]["name"] == named  # the 0.1 names are aliases
    rows = {r["name"]: r for r in saved["report"]["rows"]}
    assert set(rows) == {"8", "6", "ensemble (mean)", "ensemble (weighted)", "ensemble (calibrated)"}
    choice = saved["choice"]
    scores = choice["out_of_fold_scores"]
    assert set(scores) == {"mean", "weighted", "calibrated"} and choice["folds"] == 5
    if named == "reference":  # the notebook's recipe combines by the mean; the others are shown
        assert choice["chosen_by"] == "recipe" and saved["primary"] == "ensemble (mean)"
    else:  # chosen on validation by cross-fitted log-loss, listed first
        assert choice["chosen_by"] == "validation"
        assert scores[choice["chosen"]] == pytest.approx(min(scores.values()), rel=1e-9)
        assert saved["primary"] == f"ensemble ({choice['chosen']})"
    assert saved["report"]["rows"][2]["name"] == saved["primary"]  # after the two members
    for name, matrix in saved["confusion_matrices"].items():  # accuracy = the diagonal's share
        m = torch.tensor(matrix)
        assert int(m.sum()) == 6 and rows[name]["accuracy"] == pytest.approx(float(m.diag().sum()) / 6)
        assert rows[name]["per_class"]["support"] == m.sum(dim=1).tolist()
    assert [len(m["history"]) for m in saved["members"]] == [2, 2]
    assert all(m["feature_seconds"] > 0 for m in saved["members"]) == (named == "fast")
    assert set(saved["figures"]) == {"learning_curves", "confusion_matrix", "reliability", "confident_errors"}
    for file in saved["figures"].values():
        with Image.open(out / file) as image:
            assert image.format == "PNG" and image.size[0] >= 360
    text = (out / "report.md").read_text()
    for name in rows:
        assert f"| {name} | {rows[name]['accuracy']:.4f} |" in text
    assert "McNemar" in text and "## Per class" in text and saved["versions"]["torch"] == torch.__version__
    assert [m["weights_source"] for m in saved["members"]] == [None, None]  # the tiny source says nothing
    assert "started from weights `DEFAULT`: random init" in text
    assert (out / "split.json").is_file() and len(list(out.glob("*.metrics.csv"))) == 2
    assert "SMALL DEMO" not in saved["data"]  # only the built-in demo says so


def test_the_benchmarks_page_is_written_from_the_reports(tmp_path: Path, example: Any) -> None:
    """docs/benchmarks_page.py renders report.json files; a missing run says so instead of failing."""
    page = load_script(REPO / "docs" / "benchmarks_page.py")
    folder = write_class_folder(tmp_path / "images", per_class=20)
    payload = run_example(example, folder, tmp_path / "runs" / "tiny-best", "best")
    template = "{tiny_best_cmd}\n\n{tiny_best}\n\n{tiny_best_targets}\n\n{tiny_best_figs}\n\n{other}"
    text = page.render(template, tmp_path / "runs", static=tmp_path / "static")
    assert text.startswith(payload["command"])
    for row in payload["report"]["rows"]:
        lo, hi = row["accuracy_ci"]
        assert f"     - {row['accuracy']:.4f} [{lo:.4f}, {hi:.4f}]" in text
        assert f"     - {row['log_loss']:.4f}" in text
    primary = next(r for r in payload["report"]["rows"] if r["name"] == payload["primary"])
    verdict = "**met**" if primary["accuracy"] >= 0.99 else "**missed**"
    assert f"     - {primary['accuracy']:.2%} (95% CI" in text and verdict in text
    assert "chosen on the validation split by 5-fold cross-fitted log_loss" in text
    assert sorted(p.name for p in (tmp_path / "static").iterdir()) == sorted(
        f"tiny-best-{key}.png" for key in page.FIGURES
    )
    assert "not measured on this machine" in text and "``other``" in text


def test_without_data_it_says_what_to_download_and_never_trains_on_noise_silently(
    tmp_path: Path, example: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(example, "DEFAULT_DATA", tmp_path / "absent")
    monkeypatch.setenv("ENSEMBLENET_DATA", str(tmp_path / "cache"))
    assert example.main(["--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--download" in err and "--synthetic" in err and str(tmp_path / "cache") in err
    assert not (tmp_path / "out" / "report.json").exists()
    argv = ["--synthetic", "--members", "ref-test:4,ref-test:6", "--epochs", "1", "--resamples", "50"]
    assert example.main([*argv, "--out", str(tmp_path / "syn"), "--no-progress"]) == 0
    saved = json.loads((tmp_path / "syn" / "report.json").read_text())
    assert "SYNTHETIC" in saved["data"] and "SMALL DEMO" in saved["data"]


def test_the_examples_use_only_public_names() -> None:
    """``from ensemblenet... import`` in the examples names only what the packages export."""
    import importlib

    for script in ("cats_vs_dogs.py", "ants_vs_bees.py"):
        tree = ast.parse((EXAMPLES / script).read_text())
        imports = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("ensemblenet")
        ]
        assert imports
        for node in imports:
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                assert alias.name in module.__all__, (script, node.module, alias.name)
                assert not alias.name.startswith("_")
    assert not (EXAMPLES / "_reference.py").exists()
    assert len((EXAMPLES / "cats_vs_dogs.py").read_text().splitlines()) <= 150  # a 25-line docstring included


def test_ants_vs_bees_trains_on_train_and_reports_on_val(tmp_path: Path) -> None:
    root = tmp_path / "hymenoptera"
    write_class_folder(root / "train", per_class=20, seed=1)
    write_class_folder(root / "val", per_class=6, seed=2)
    with registered_tiny_source("ref-test"):
        ants = load_example("ants_vs_bees")
        argv = ["--data", str(root), "--members", "ref-test:4,ref-test:6", "--epochs", "1", "--limit", "20"]
        assert ants.main([*argv, "--resamples", "50", "--no-progress", "--out", str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["split"] == {"train": 20, "val": 8, "test": 12}  # val cut from train/, then 20 kept
    assert saved["report"]["n"] == 12  # val/ is the test split, as in the tutorial


@pytest.mark.slow
def test_the_notebooks_resnet_pair_runs_from_local_weight_files(tmp_path: Path) -> None:
    """``--members torchvision:resnet18=FILE,torchvision:resnet34=FILE``: the pair the notebook used,
    from state-dict files (no ResNet ImageNet weights exist offline; random ones stand in here)."""
    import torchvision

    files = {}
    for name in ("resnet18", "resnet34"):
        torch.manual_seed(0)
        files[name] = tmp_path / f"{name}.pth"
        torch.save(getattr(torchvision.models, name)().state_dict(), files[name])
    folder = write_class_folder(tmp_path / "images", per_class=14)
    members = ",".join(f"torchvision:{n}={f}" for n, f in files.items())
    out = tmp_path / "report"
    argv = ["--data", str(folder), "--members", members, "--recipe", "seed", "--epochs", "1"]
    argv += ["--resamples", "50", "--no-progress", "--out", str(out)]
    assert load_example("cats_vs_dogs").main(argv) == 0
    saved = json.loads((out / "report.json").read_text())
    assert [m["backbone"] for m in saved["members"]] == ["torchvision:resnet18", "torchvision:resnet34"]
    assert [m["weights_source"] for m in saved["members"]] == [f"file {f}" for f in files.values()]
    assert saved["recipe"]["freeze"] == {"name": "bn_only", "update_stats": True}
    assert saved["primary"] == "ensemble (mean)"
    assert {r["name"] for r in saved["report"]["rows"]} >= {"resnet18", "resnet34", "ensemble (mean)"}


def test_distill_writes_the_student_and_the_ensemble_next_to_the_report(tmp_path: Path, example: Any) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=20)
    out = tmp_path / "report"
    saved = run_example(example, folder, out, "fast", "--distill", "ref-test:6")
    assert (out / "ensemble.pt").is_file() and (out / "student.pt").is_file()
    distilled = saved["distillation"]
    assert distilled["scored_on"] == "test" and distilled["n"] == saved["report"]["n"]
    assert [row["kind"] for row in distilled["scores"]] == ["ensemble", "member", "member", "student"]
    # The ensemble row is the report's primary ensemble, scored on the same images.
    primary = {r["name"]: r for r in saved["report"]["rows"]}[saved["primary"]]
    assert distilled["scores"][0]["accuracy"] == pytest.approx(primary["accuracy"])
    # The benchmarks page renders the distillation and the targets, from the run or from the archive.
    page = load_script(REPO / "docs" / "benchmarks_page.py")
    template = "{report_distill}\n\n{report_targets15}"
    text = page.render(template, tmp_path, static=tmp_path / "static", archive=tmp_path / "none")
    student = distilled["scores"][-1]
    assert f"   * - {student['name']}" in text and f"     - {student['accuracy']:.4f}" in text
    assert f"{distilled['speedup']:.2f}x" in text and "ensemble test accuracy ≥ 99.45%" in text
    assert (
        text.count("**met**") + text.count("**missed**") == 6 and "from the first image to the report" in text
    )
    # Students distilled later from the same ensemble: validation loss alone chooses the one the
    # targets are checked on (here a later one that equals the ensemble on test).
    own_val = page.best_val_loss(distilled)
    later_student = {
        **distilled,
        "student": "later:1",
        "best_epoch": 1,
        "history": [{"epoch": 1, "val_loss": own_val / 2}],
        "scores": [
            *distilled["scores"][:-1],
            {**student, "name": "student later", "accuracy": primary["accuracy"]},
        ],
    }
    worse_student = {
        **later_student,
        "student": "later:2",
        "history": [{"epoch": 1, "val_loss": own_val * 2}],
    }
    (tmp_path / "archive2" / "students").mkdir(parents=True)
    (tmp_path / "archive2" / "students" / "report.json").write_text(
        json.dumps({"students": [later_student, worse_student]})
    )
    with_later = page.render(
        template + "\n\n{report_students}",
        tmp_path,
        static=tmp_path / "static",
        archive=tmp_path / "archive2",
    )
    assert "``later:1`` (lowest validation loss of 3 students)" in with_later
    assert "   * - ``later:1`` (chosen)" in with_later and "``later:2`` (chosen)" not in with_later
    assert "(+0.00 points)" in with_later
    archived = page.archive_reports([out], tmp_path / "archive")
    assert [p.name for p in archived] == ["report.json"]
    empty = tmp_path / "no-runs"
    empty.mkdir()
    assert page.render(template, empty, static=tmp_path / "static", archive=tmp_path / "archive") == text


def test_the_strong_recipe_decides_flip_on_validation_and_refits(tmp_path: Path, example: Any) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=20)
    out = tmp_path / "report"
    saved = run_example(example, folder, out, "strong", "--refit")
    assert saved["recipe"]["name"] == "strong" and saved["recipe"]["refit"] is True
    assert [len(m["history"]) for m in saved["members"]] == [2, 2]  # --epochs is taken as given
    flip = saved["flip_tta"]
    assert flip["flip"] == (flip["flip_score"] < flip["plain"])
    assert (out / "ensemble.pt").is_file() and (out / "ensemble-refit.pt").is_file()
    assert saved["refit"]["n"] == saved["report"]["n"] == 6
    assert all(m["refit_checkpoint"].endswith(".refit.pt") for m in saved["members"])
