"""Refit on train + validation: the chosen epochs, a fresh model, the same combination."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ensemblenet import ConfigError, finetune, load_model, train_ensemble

from .conftest import registered_tiny_source, write_class_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def _csv_rows(path: Path) -> int:
    return len(path.read_text().strip().splitlines()) - 1


def test_finetune_refits_on_train_and_val_for_the_chosen_epochs(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=20)
    with registered_tiny_source("refit-tiny"):
        result = finetune("refit-tiny:4", folder, epochs=4, refit=True, out=tmp_path / "m.pt", progress=False)
        plain = finetune("refit-tiny:4", folder, epochs=4, out=tmp_path / "p.pt", progress=False)
        assert plain.refit_path is None
        assert result.refit_path == tmp_path / "m.refit.pt" and result.refit_path.is_file()
        refitted = load_model(result.refit_path)
        chosen = load_model(result.path)
    split = json.loads((tmp_path / "m.refit.split.json").read_text())
    n_train, n_val = len(result.splits["train"]), len(result.splits["val"])
    parts = split["parts"]
    assert len(parts["train"]) == n_train + n_val and "val" not in parts
    assert len(parts["test"]) == len(result.splits["test"])
    assert _csv_rows(tmp_path / "m.refit.metrics.csv") == result.best_epoch  # the epochs validation chose
    # A different model from the validation-chosen one (more images), with the same architecture.
    assert chosen.state_dict().keys() == refitted.state_dict().keys()
    assert any(not torch.equal(t, refitted.state_dict()[k]) for k, t in chosen.state_dict().items())


def test_the_refit_ensemble_reuses_the_validation_fitted_combination(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=20)
    with registered_tiny_source("refit-tiny"):
        run = train_ensemble(
            ["refit-tiny:4", "refit-tiny:6"], folder, epochs=2, refit=True, out_dir=tmp_path, progress=False
        )
        with pytest.raises(ConfigError, match="call ensemble\\(\\) first"):
            run.refit_ensemble()
        ensemble = run.ensemble("weighted", progress=False)
        refit = run.refit_ensemble()
        assert [m.config.backbone for m in refit.members] == ["refit-tiny:4", "refit-tiny:6"]
        assert refit.strategy is not ensemble.strategy
        torch.testing.assert_close(refit.strategy.weights, ensemble.strategy.weights)  # fitted on val once
        assert refit.tta == ensemble.tta
        scores = refit.evaluate(run.splits["test"], progress=False)
        assert scores.n == len(run.splits["test"])
        assert all(m.to_dict()["refit_checkpoint"].endswith(".refit.pt") for m in run)
        plain = train_ensemble(["refit-tiny:4"], folder, epochs=1, out_dir=tmp_path / "plain", progress=False)
        plain.ensemble(progress=False)
        with pytest.raises(ConfigError, match="refit=True"):
            plain.refit_ensemble()
