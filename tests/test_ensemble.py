"""Ensemble: shared decoding with per-member preprocessing, NaN rows for unreadable files, metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ensemblenet.data import scan_folder
from ensemblenet.ensemble import Ensemble
from ensemblenet.errors import ClassMismatchError, ConfigError, DataError
from ensemblenet.models import ModelConfig, TransferModel, create_model, save_model
from ensemblenet.scoring import EnsembleEvaluation
from ensemblenet.spec import InputSpec
from ensemblenet.strategies import WeightedStrategy

from .conftest import make_tiny_model, registered_tiny_source, write_class_folder

CLASSES = ("cats", "dogs")
CPU: dict[str, Any] = {
    "progress": False,
    "device": "cpu",
}  # exact comparisons with CPU references (no TF32 on GPUs)
SPEC_A = InputSpec(size=(16, 16))  # ImageNet statistics
SPEC_B = InputSpec(size=(20, 24), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def sharpened(model: TransferModel, factor: float = 20.0) -> TransferModel:
    """Scale the head so probabilities spread far from 0.5: preprocessing errors then show."""
    with torch.no_grad():
        for p in model.head.parameters():
            p.mul_(factor)
    return model


def two_members(classes: tuple[str, ...] = CLASSES) -> list[TransferModel]:
    return [
        sharpened(make_tiny_model(classes, SPEC_A, seed=1)),
        sharpened(make_tiny_model(classes, SPEC_B, width=6, seed=2)),
    ]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_class_folder(tmp_path / "images", per_class=5, size=(30, 40))


def by_hand(model: TransferModel, paths: list[Path]) -> torch.Tensor:
    """Decode with PIL, resize to the member's size, feed uint8 to the model: (N, C) probabilities."""
    height, width = model.spec.size
    arrays = [
        np.array(Image.open(p).convert("RGB").resize((width, height), Image.Resampling.BILINEAR))
        for p in paths
    ]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(images), dim=1)


def test_members_with_different_specs_match_running_each_alone(folder: Path) -> None:
    members = two_members()
    members[0].train()  # must be evaluated in eval mode and left in train mode
    members[1].eval()
    ensemble = Ensemble(members)
    probas = ensemble.member_probas(folder, batch_size=4, **CPU)
    assert probas.shape == (2, 10, 2) and probas.dtype == torch.float32
    assert members[0].training and all(m.training for m in members[0].modules())
    assert not members[1].training
    paths = list(scan_folder(folder).paths)
    for i, member in enumerate(members):
        torch.testing.assert_close(probas[i], by_hand(member, paths), atol=1e-5, rtol=0)
    # The members really disagree, so a mixed-up view or normalization would be caught.
    assert (probas[0] - probas[1]).abs().max() > 0.05


def test_predict_proba_and_predict_follow_the_strategy(folder: Path) -> None:
    members = two_members()
    probas = Ensemble(members).member_probas(folder, **CPU)
    mean = Ensemble(members).predict_proba(folder, **CPU)
    torch.testing.assert_close(mean, probas.double().mean(dim=0))
    weighted = Ensemble(members, strategy="weighted", weights=[1, 3]).predict_proba(folder, **CPU)
    torch.testing.assert_close(weighted, 0.25 * probas[0].double() + 0.75 * probas[1].double())
    preds = Ensemble(members, strategy="vote").predict(folder, **CPU)
    assert preds.dtype == torch.int64
    votes = probas.argmax(dim=2)
    agree = votes[0] == votes[1]
    assert torch.equal(preds[agree], votes[0][agree])
    # Ties (one vote each) go to the class with the higher mean probability.
    assert torch.equal(preds[~agree], probas.double().mean(dim=0).argmax(dim=1)[~agree])


def test_evaluate_matches_metrics_computed_by_hand(folder: Path) -> None:
    members = two_members()
    ensemble = Ensemble(members, strategy="weighted", weights=[0.3, 0.7])
    probas = ensemble.member_probas(folder, **CPU).double()
    labels = torch.tensor(scan_folder(folder).labels)
    result = ensemble.evaluate(folder, **CPU)

    def acc(p: torch.Tensor) -> float:
        return float((p.argmax(dim=1) == labels).double().mean())

    def nll(p: torch.Tensor) -> float:
        return float(-p[torch.arange(len(labels)), labels].clamp(1e-7, 1).log().mean())

    combined = 0.3 * probas[0] + 0.7 * probas[1]
    assert isinstance(result, EnsembleEvaluation)
    assert result.accuracy == pytest.approx(acc(combined))
    assert result.log_loss == pytest.approx(nll(combined))
    assert [m.name for m in result.members] == ["test:tiny#1", "test:tiny#2"]
    for member, p in zip(result.members, probas, strict=True):
        assert member.accuracy == pytest.approx(acc(p))
        assert member.log_loss == pytest.approx(nll(p))
    assert (result.n, result.n_skipped, result.strategy) == (10, 0, "weighted")
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["members"][1]["name"] == "test:tiny#2"
    assert as_dict["accuracy"] == pytest.approx(result.accuracy)
    text = str(result)
    assert "test:tiny#1" in text and "ensemble (weighted)" in text and f"{result.log_loss:.4f}" in text


def test_corrupt_file_gives_nan_row_and_is_skipped_in_evaluate(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (folder / "cats" / "cat.broken.png").write_bytes(b"this is not a png")
    paths = list(scan_folder(folder, verify=False).paths)
    bad = paths.index(folder / "cats" / "cat.broken.png")
    ensemble = Ensemble(two_members())
    with caplog.at_level(logging.WARNING, logger="ensemblenet"):
        probas = ensemble.member_probas(folder, batch_size=4, **CPU)
    assert any("1 of 11 images could not be read" in r.getMessage() for r in caplog.records)
    assert torch.isnan(probas[:, bad]).all()
    good = [i for i in range(len(paths)) if i != bad]
    assert not torch.isnan(probas[:, good]).any()
    # The other rows are unaffected by the bad file in their batch.
    torch.testing.assert_close(probas[1, good], by_hand(ensemble.members[1], [paths[i] for i in good]))
    assert torch.isnan(ensemble.predict_proba(folder, **CPU)[bad]).all()
    preds = ensemble.predict(folder, **CPU)
    assert preds[bad] == -1 and (preds[good] >= 0).all()
    result = ensemble.evaluate(folder, **CPU)
    assert (result.n, result.n_skipped) == (10, 1)
    clean = ensemble.evaluate(scan_folder(folder), **CPU)  # rejected at scan time instead
    assert (clean.n, clean.n_skipped) == (10, 1)
    assert clean.accuracy == pytest.approx(result.accuracy)


def test_class_mismatch_names_member_and_both_lists() -> None:
    a = make_tiny_model(("cats", "dogs"))
    with pytest.raises(ClassMismatchError, match=r"member 1 .*\['dogs', 'cats'\].*\['cats', 'dogs'\].*order"):
        Ensemble([a, make_tiny_model(("dogs", "cats"))])
    with pytest.raises(ClassMismatchError, match=r"different names.*Retrain member 2"):
        Ensemble([a, a, make_tiny_model(("cats", "birds"))])


def test_data_classes_are_matched_by_name(folder: Path) -> None:
    ensemble = Ensemble(two_members())
    reordered = scan_folder(folder, classes=["dogs", "cats"])
    assert ensemble.evaluate(reordered, **CPU) == ensemble.evaluate(folder, **CPU)
    (folder / "birds").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "birds" / "bird.0.png")
    with pytest.raises(ClassMismatchError, match="birds"):
        ensemble.evaluate(folder, **CPU)


def noise_member(seed: int = 3) -> TransferModel:
    """Confident guesses from a green-channel pixel patch: pure noise with respect to the label."""

    class GreenPatch(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, 1, :2, :2].flatten(1)

    torch.manual_seed(seed)
    config = ModelConfig("test:noise", {"name": "linear"}, CLASSES, SPEC_A, num_features=4)
    return sharpened(TransferModel(GreenPatch(), nn.Linear(4, 2), config), 10.0)


def colour_member() -> TransferModel:
    """Reads the mean red minus blue: informative on write_class_folder's red cats / blue dogs."""
    config = ModelConfig("test:colour", {"name": "linear"}, CLASSES, SPEC_B, num_features=3)
    head = nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0, -2.0], [-2.0, 0.0, 2.0]]))
        head.bias.zero_()
    return TransferModel(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), head, config)


def test_fit_weights_down_weights_a_noise_member(folder: Path) -> None:
    ensemble = Ensemble([noise_member(), colour_member()])
    result = ensemble.evaluate(folder, **CPU)
    assert result.members[1].accuracy == 1.0  # the colour member is informative...
    assert result.members[0].log_loss > 1.0  # ...and the noise member confidently wrong at times
    weights = ensemble.fit_weights(folder, **CPU)
    assert isinstance(ensemble.strategy, WeightedStrategy)
    assert weights.shape == (2,) and float(weights.sum()) == pytest.approx(1.0)
    assert weights[1] > weights[0]
    fitted = ensemble.evaluate(folder, **CPU)
    assert fitted.strategy == "weighted"
    assert fitted.log_loss <= result.log_loss


def test_weighted_without_weights_must_be_fitted_first(folder: Path) -> None:
    ensemble = Ensemble([noise_member(), colour_member()], strategy="weighted")
    with pytest.raises(ConfigError, match=r"fit_weights\(val\)"):
        ensemble.predict(folder, **CPU)
    ensemble.fit_weights(folder, **CPU)
    assert ensemble.predict(folder, **CPU).shape == (10,)


def test_predict_on_a_tensor_resizes_per_member() -> None:
    members = two_members()
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 30, 40), generator=gen, dtype=torch.uint8)
    ensemble = Ensemble(members)
    probas = ensemble.member_probas(images, batch_size=2, **CPU)
    for i, member in enumerate(members):
        x = F.interpolate(
            images.float() / 255, size=member.spec.size, mode="bilinear", antialias=True, align_corners=False
        )
        with torch.no_grad():
            torch.testing.assert_close(probas[i], torch.softmax(member.eval()(x.clamp(0, 1)), dim=1))
    preds = ensemble.predict(images, **CPU)
    assert torch.equal(preds, probas.double().mean(dim=0).argmax(dim=1))
    # float 0..1 input is the same picture as uint8 0..255
    torch.testing.assert_close(ensemble.member_probas(images.float() / 255, **CPU), probas)


def test_tensor_at_member_size_is_fed_unchanged() -> None:
    member = sharpened(make_tiny_model(CLASSES, SPEC_A))
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    probas = Ensemble([member]).member_probas(images, **CPU)
    with torch.no_grad():
        torch.testing.assert_close(probas[0], torch.softmax(member.eval()(images), dim=1))


def test_list_of_files_keeps_rows_aligned(folder: Path) -> None:
    paths = list(scan_folder(folder).paths)[:3]
    missing = folder / "nowhere.png"
    ensemble = Ensemble(two_members())
    probs = ensemble.predict_proba([paths[0], missing, str(paths[2])], **CPU)
    assert probs.shape == (3, 2)
    assert torch.isnan(probs[1]).all() and not torch.isnan(probs[[0, 2]]).any()
    single = ensemble.predict_proba(paths[2], **CPU)  # one file path
    torch.testing.assert_close(single[0], probs[2])
    with pytest.raises(ConfigError, match="labelled"):
        ensemble.evaluate(paths, **CPU)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.rand(3, 16, 16), r"unsqueeze\(0\)"),
        (torch.rand(2, 1, 16, 16), r"\(N, 3, H, W\)"),
        (torch.rand(2, 3, 16, 16) * 255, r"\[0, 1\]"),
        (torch.ones(2, 3, 16, 16, dtype=torch.int32), "uint8"),
    ],
)
def test_bad_image_tensors(bad: torch.Tensor, match: str) -> None:
    ensemble = Ensemble(two_members())
    with pytest.raises(ConfigError, match=match):
        ensemble.predict(bad, **CPU)
    with pytest.raises(ConfigError, match="labelled"):
        ensemble.evaluate(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), **CPU)


def test_constructor_errors() -> None:
    members = two_members()
    with pytest.raises(ConfigError, match="at least one member"):
        Ensemble([])
    with pytest.raises(ConfigError, match="not an ensemblenet TransferModel"):
        Ensemble([members[0], nn.Linear(2, 2)])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="only apply to strategy='weighted'"):
        Ensemble(members, strategy="vote", weights=[1, 2])
    with pytest.raises(ConfigError, match="3 weights given for 2 members"):
        Ensemble(members, strategy="weighted", weights=[1, 2, 3])
    assert isinstance(Ensemble(members, weights=[1, 2]).strategy, WeightedStrategy)  # mean + weights
    with pytest.raises(ConfigError, match="nothing to fit"):
        Ensemble(members, strategy="vote").fit_weights(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_user_strategy_function() -> None:
    members = two_members()
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)

    def first_member(probs: torch.Tensor) -> torch.Tensor:
        return probs[0]

    ensemble = Ensemble(members, strategy=first_member)
    torch.testing.assert_close(
        ensemble.predict_proba(images, **CPU),
        ensemble.member_probas(images, **CPU)[0].double(),
    )
    broken = Ensemble(members, strategy=lambda p: p)
    with pytest.raises(ConfigError, match=r"must map \(members, images, classes\)"):
        broken.predict(images, **CPU)


@pytest.fixture
def tiny_source() -> Iterator[str]:
    """A backbone source building conftest's tiny network, so checkpoints rebuild offline in ms."""
    with registered_tiny_source("ens-test") as source:
        yield source


def test_from_checkpoints_rebuilds_the_members(tmp_path: Path, folder: Path, tiny_source: str) -> None:
    torch.manual_seed(0)
    originals = [
        create_model(f"{tiny_source}:8", CLASSES, head="linear", input_spec=SPEC_A),
        create_model(f"{tiny_source}:6", CLASSES, head="linear", input_spec=SPEC_B),
    ]
    paths = [save_model(m, tmp_path / f"m{i}.pt") for i, m in enumerate(originals)]
    loaded = Ensemble.from_checkpoints(paths, strategy="weighted", weights=[2, 1])
    assert [m.spec for m in loaded.members] == [SPEC_A, SPEC_B]
    assert loaded.member_names == ("ens-test:8", "ens-test:6")
    expected = Ensemble(originals).member_probas(folder, **CPU)
    torch.testing.assert_close(loaded.member_probas(folder, **CPU), expected)
    odd = save_model(create_model(f"{tiny_source}:8", ("dogs", "cats"), head="linear"), tmp_path / "odd.pt")
    with pytest.raises(ClassMismatchError, match=r"odd\.pt"):
        Ensemble.from_checkpoints([paths[0], odd])
    with pytest.raises(ConfigError, match="list of model files"):
        Ensemble.from_checkpoints(paths[0])  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_returns_members_to_their_device(folder: Path) -> None:
    members = two_members()
    expected = Ensemble(members).member_probas(folder, **CPU)
    on_gpu = Ensemble(members).member_probas(folder, progress=False, device="cuda")
    assert on_gpu.device.type == "cpu"
    assert all(p.device.type == "cpu" for m in members for p in m.parameters())
    torch.testing.assert_close(on_gpu, expected, atol=1e-2, rtol=0)  # TF32 convolutions


def test_predict_on_a_folder_not_laid_out_by_class(tmp_path: Path) -> None:
    """New photos in one flat folder (no class sub-folders, no cat.1.jpg names) can be predicted."""
    folder = tmp_path / "new"
    (folder / "more").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["b.png", "a.png", "more/c.png"]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / name)
    ensemble = Ensemble([make_tiny_model(), make_tiny_model(seed=1)])
    probs = ensemble.predict_proba(folder, progress=False, device="cpu")
    files = sorted([folder / "a.png", folder / "b.png", folder / "more" / "c.png"])
    assert torch.allclose(probs, ensemble.predict_proba(files, progress=False, device="cpu"))
    assert probs.shape == (3, 2)
    with pytest.raises(DataError, match=r"evaluate needs labelled images, and .* is not a labelled folder"):
        ensemble.evaluate(folder, progress=False, device="cpu")
    with pytest.raises(ConfigError, match="not a tensor or a list of files"):
        ensemble.evaluate(files, progress=False, device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError):
        ensemble.predict_proba(empty, progress=False)
