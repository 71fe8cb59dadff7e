"""Report figures: PNGs written at the promised size, and the selections behind them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ensemblenet.data import load_image
from ensemblenet.errors import ConfigError
from ensemblenet.scoring import (
    expected_calibration_error,
    most_confident_errors,
    plot_confident_errors,
    plot_confusion_matrices,
    plot_confusion_matrix,
    plot_learning_curves,
    plot_reliability,
    reliability_bins,
)
from ensemblenet.training import EpochRecord, History

pytest.importorskip("matplotlib")


def png_size(path: Path) -> tuple[int, int]:
    assert path.stat().st_size > 1000  # a real picture, not an empty file
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


# ----------------------------------------------------------------- selection


def test_most_confident_errors_hand_made_case() -> None:
    probs = torch.tensor(
        [
            [0.95, 0.05, 0.00],  # true 0: right
            [0.10, 0.85, 0.05],  # true 0: wrong at 0.85
            [0.30, 0.30, 0.40],  # true 1: wrong at 0.40
            [0.02, 0.01, 0.97],  # true 0: wrong at 0.97 (most confident)
            [float("nan")] * 3,  # unreadable: never chosen
            [0.10, 0.05, 0.85],  # true 1: wrong at 0.85, tie with row 1 -> after it
            [0.20, 0.70, 0.10],  # true 1: right
        ]
    )
    labels = torch.tensor([0, 0, 1, 0, 2, 1, 1])
    assert most_confident_errors(probs, labels, k=10).tolist() == [3, 1, 5, 2]
    assert most_confident_errors(probs, labels, k=2).tolist() == [3, 1]
    assert most_confident_errors(probs, labels, k=0).tolist() == []


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(2, 5), st.integers(0, 10_000), st.integers(0, 12))
def test_most_confident_errors_matches_brute_force(n: int, c: int, seed: int, k: int) -> None:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, c, generator=g) * 3, dim=1)
    labels = torch.randint(0, c, (n,), generator=g)
    conf, pred = probs.double().max(dim=1)
    wrong = [i for i in range(n) if pred[i] != labels[i]]
    expected = sorted(wrong, key=lambda i: (-float(conf[i]), i))[:k]
    assert most_confident_errors(probs, labels, k).tolist() == expected


def test_bad_arguments_raise_config_errors() -> None:
    probs, labels = torch.full((3, 2), 0.5), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ConfigError, match="k must be"):
        most_confident_errors(probs, labels, k=-1)
    with pytest.raises(ConfigError, match=r"\(N, C\)"):
        most_confident_errors(probs, labels[:2])
    with pytest.raises(ConfigError, match="n_bins"):
        reliability_bins(probs, labels, n_bins=0)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.integers(2, 4), st.integers(1, 20), st.integers(0, 10_000))
def test_reliability_bins_add_up_to_the_ece(n: int, c: int, n_bins: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, c, generator=g) * 2, dim=1)
    labels = torch.randint(0, c, (n,), generator=g)
    count, acc, conf = reliability_bins(probs, labels, n_bins)
    assert int(count.sum()) == n
    keep = count > 0
    assert torch.isnan(acc[~keep]).all()
    ece = float((count[keep] / n * (acc[keep] - conf[keep]).abs()).sum())
    assert math.isclose(ece, expected_calibration_error(probs, labels, n_bins), abs_tol=1e-9)


# ----------------------------------------------------------------- figures


def history(losses: list[float]) -> History:
    return History([EpochRecord(i + 1, loss, loss * 1.1, 1 - loss / 2) for i, loss in enumerate(losses)])


def test_learning_curves_png(tmp_path: Path) -> None:
    path = plot_learning_curves(
        {"a": history([0.9, 0.5, 0.3]), "b": history([0.8, 0.6])}, tmp_path / "sub" / "curves.png"
    )
    assert png_size(path) == (1000, 400)


def test_confusion_matrix_png(tmp_path: Path) -> None:
    assert png_size(plot_confusion_matrix([[5, 1], [2, 7]], ["cat", "dog"], tmp_path / "cm.png")) == (
        360,
        360,
    )
    matrices = {"m1": torch.tensor([[5, 1], [2, 7]]), "m2": torch.tensor([[6, 0], [0, 9]])}
    assert png_size(plot_confusion_matrices(matrices, ["cat", "dog"], tmp_path / "two.png")) == (720, 360)
    with pytest.raises(ConfigError, match="3 classes"):
        plot_confusion_matrix([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "bad.png")


def test_reliability_png(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(50, 2, generator=g), dim=1)
    labels = torch.randint(0, 2, (50,), generator=g)
    path = plot_reliability({"member": probs, "ensemble": probs.flip(1)}, labels, tmp_path / "rel.png")
    assert png_size(path) == (600, 600)


def test_confident_errors_grid_reads_only_what_it_shows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = []
    for i in range(6):
        file = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(file)
        files.append(file)
    files[0].write_bytes(b"broken")  # predicted right, so never opened
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.99, 0.01], [0.5, 0.5]])
    labels = torch.tensor([0, 0, 1, 0, 1, 0])
    captions = [f.name for f in files]
    with pytest.raises(ConfigError, match=r"load=ensemblenet\.load_image"):
        plot_confident_errors(files, probs, labels, ["a", "b"], tmp_path / "errors.png", captions=captions)
    path = plot_confident_errors(
        files, probs, labels, ["ant", "bee"], tmp_path / "errors.png", k=5, captions=captions, load=load_image
    )
    # 4 wrong rows (4, 1, 2, 3) -> one row of 4 panels
    assert png_size(path) == (1200, 330)
    arrays = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(6)]
    assert png_size(plot_confident_errors(arrays, probs, labels, ["a", "b"], tmp_path / "e2.png", k=1)) == (
        1200,
        330,
    )


def test_confident_errors_with_no_errors_still_draws(tmp_path: Path) -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    path = plot_confident_errors(
        [np.zeros((4, 4, 3), np.uint8)] * 2, probs, torch.tensor([0, 1]), ["a", "b"], tmp_path / "none.png"
    )
    assert png_size(path) == (1200, 330)
