"""The reference benchmark's runner (``examples/_reference.py``) end to end, on tiny networks.

Real backbones and images are exercised by running the examples themselves (see the benchmarks
page); this checks that both recipes produce a complete, self-consistent report folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from ensemblenet import scan_folder, split_samples

from .conftest import REPO, load_example, load_script, registered_tiny_source, write_class_folder

pytest.importorskip("matplotlib")


@pytest.fixture
def reference() -> Iterator[Any]:
    with registered_tiny_source("ref-test"):  # weights ignored: random init is enough here
        yield load_example("_reference")


@pytest.mark.parametrize("recipe", ["seed", "best"])
def test_both_recipes_write_a_complete_report(tmp_path: Path, reference: Any, recipe: str) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=20)
    train, val, test = split_samples(scan_folder(folder), (0.5, 0.25, 0.25), seed=0)
    out = tmp_path / "report"
    chosen = reference.RECIPES[recipe]
    payload = reference.run(
        title="tiny",
        data_note="generated",
        train=train,
        val=val,
        test=test,
        members=["ref-test:8", "ref-test:6"],
        recipe=type(chosen)(**{**chosen.__dict__, "epochs": 2}),
        seed=0,
        out=out,
        progress=False,
        device="cpu",
        resamples=100,
    )
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(payload))
    assert saved["split"] == {"train": 20, "val": 10, "test": 10}
    assert saved["recipe"]["name"] == recipe
    rows = {r["name"]: r for r in saved["report"]["rows"]}
    assert set(rows) == {"8", "6", "ensemble (mean)", "ensemble (weighted)", "ensemble (calibrated)"}
    if chosen.combine == "auto":  # chosen on validation by cross-fitted log-loss, listed first
        choice = saved["choice"]
        scores = choice["out_of_fold_scores"]
        assert set(scores) == {"mean", "weighted", "calibrated"} and choice["folds"] == 5
        assert scores[choice["chosen"]] == pytest.approx(min(scores.values()), rel=1e-9)
        assert saved["primary"] == f"ensemble ({choice['chosen']})"
    else:
        assert saved["choice"] is None and saved["primary"] == f"ensemble ({chosen.combine})"
    assert saved["report"]["rows"][2]["name"] == saved["primary"]  # after the two members
    # every row's accuracy is its confusion matrix's diagonal share
    for name, matrix in saved["confusion_matrices"].items():
        m = torch.tensor(matrix)
        assert int(m.sum()) == 10
        assert rows[name]["accuracy"] == pytest.approx(float(m.diag().sum()) / 10)
    assert [len(m["history"]) for m in saved["members"]] == [2, 2]
    assert all(m["feature_seconds"] > 0 for m in saved["members"]) == chosen.feature_cache
    for file in saved["figures"].values():
        with Image.open(out / file) as image:
            assert image.format == "PNG" and image.size[0] >= 360
    text = (out / "report.md").read_text()
    for name in rows:
        assert f"| {name} | {rows[name]['accuracy']:.4f} |" in text
    assert "McNemar" in text and saved["versions"]["torch"] == torch.__version__
    assert [m["weights_source"] for m in saved["members"]] == [None, None]  # the tiny source says nothing
    assert "started from weights `DEFAULT`: random init" in text


def test_the_benchmarks_page_is_written_from_the_reports(tmp_path: Path, reference: Any) -> None:
    """docs/benchmarks_page.py renders report.json files; a missing run says so instead of failing."""
    page = load_script(REPO / "docs" / "benchmarks_page.py")
    folder = write_class_folder(tmp_path / "images", per_class=12)
    train, val, test = split_samples(scan_folder(folder), (0.5, 0.25, 0.25), seed=0)
    best = reference.RECIPES["best"]
    payload = reference.run(
        title="tiny", data_note="generated", train=train, val=val, test=test,
        members=["ref-test:8", "ref-test:6"], recipe=type(best)(**{**best.__dict__, "epochs": 2}), seed=0,
        out=tmp_path / "runs" / "tiny-best", progress=False, device="cpu", resamples=50,
    )  # fmt: skip
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


@pytest.mark.slow
def test_the_notebooks_resnet_pair_runs_from_local_weight_files(tmp_path: Path, one_thread: None) -> None:
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
    assert saved["recipe"]["freeze"] == "bn_only" and saved["primary"] == "ensemble (mean)"
    assert {r["name"] for r in saved["report"]["rows"]} >= {"resnet18", "resnet34", "ensemble (mean)"}
