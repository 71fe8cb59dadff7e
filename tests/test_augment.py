"""Augmentation presets: names, 0.1 compatibility, determinism, the caches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ensemblenet import ConfigError, InputSpec, TrainConfig, Trainer, UnknownNameError, scan_folder
from ensemblenet.data import AUGMENTATIONS, ImageDataset, View, resolve_augment
from ensemblenet.training import compute_features, fit_with_feature_cache

from .conftest import make_tiny_model, write_class_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def image(seed: int = 0, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("bad", ["randaugment", "Light", "flips"])
def test_unknown_presets_are_refused_with_the_list(bad: str) -> None:
    with pytest.raises(
        UnknownNameError, match=r"unknown augmentation: .*Valid options: 'flip', 'light', 'none', 'strong'"
    ):
        resolve_augment(bad)
    with pytest.raises(UnknownNameError, match=bad):
        TrainConfig(augment=bad)
    with pytest.raises(ConfigError, match="augment must be one of"):
        resolve_augment(3)


def test_true_and_false_keep_their_01_meaning() -> None:
    flip = resolve_augment(True)
    assert flip is not None and flip.name == "flip" and resolve_augment(False) is None
    assert resolve_augment("none") is None and TrainConfig(augment="none").augment is False
    x = image()
    torch.manual_seed(7)
    coin = bool(torch.rand(()) < 0.5)  # how 0.1 decided, one draw per image
    torch.manual_seed(7)
    (out,) = flip([x])
    assert torch.equal(out, x.flip(-1) if coin else x)


@pytest.mark.parametrize("name", ["light", "strong"])
def test_presets_change_pixels_keep_shape_and_repeat_with_the_seed(name: str) -> None:
    augment = resolve_augment(name)
    assert augment is not None
    x = image()
    torch.manual_seed(1)
    a = augment([x])[0]
    torch.manual_seed(1)
    b = augment([x])[0]
    torch.manual_seed(2)
    c = augment([x])[0]
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)


def test_every_view_of_an_image_gets_the_same_draws() -> None:
    """Members of different input sizes see the same crop: the 64 px view, shrunk to 32 px, is close
    to the 32 px view (different resampling only)."""
    augment = resolve_augment("light")
    assert augment is not None
    big = image(size=64).float()
    big = F.avg_pool2d(F.avg_pool2d(big[None], 3, 1, 1), 3, 1, 1)[0].round().to(torch.uint8)  # smooth content
    small = F.interpolate(big[None].float(), size=(32, 32), mode="bilinear", antialias=True)[0].round()
    for seed in range(5):
        torch.manual_seed(seed)
        a_small, a_big = augment([small.to(torch.uint8), big])
        shrunk = F.interpolate(a_big[None].float(), size=(32, 32), mode="bilinear", antialias=True)[0]
        assert (shrunk - a_small.float()).abs().mean() < 12, seed  # independent crops differ by ~40


def test_augmentation_applies_after_the_decoded_cache(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=4)
    samples = scan_folder(folder)
    views = [View((16, 16)), View((24, 24))]
    plain = ImageDataset(samples, views, augment="strong")
    cached = ImageDataset(samples, views, augment="strong", cache=tmp_path / "cache")
    for i in range(len(samples)):
        cached[i]  # fill the cache
    for i in range(len(samples)):
        torch.manual_seed(i)
        a = plain[i]
        torch.manual_seed(i)
        b = cached[i]
        assert not isinstance(a, type(None)) and not isinstance(b, type(None))
        for x, y in zip(a[0], b[0], strict=True):  # type: ignore[index]
            assert torch.equal(x, y)


def test_feature_cache_keeps_a_fixed_number_of_augmented_views(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=6, size=(16, 16))
    samples = scan_folder(folder)
    model = make_tiny_model(("cats", "dogs"), InputSpec(size=(16, 16)))
    one = compute_features(model, samples, None, dtype=torch.float32, augment="light", views=3, seed=4)
    two = compute_features(model, samples, None, dtype=torch.float32, augment="light", views=3, seed=4)
    other = compute_features(model, samples, None, dtype=torch.float32, augment="light", views=3, seed=5)
    plain = compute_features(model, samples, None, dtype=torch.float32)
    assert one.features.shape[0] == 4 and torch.equal(one.features, two.features)
    assert torch.equal(one.features[0], plain.features[0])  # view 0 is the plain image
    assert not torch.equal(one.features[1:], other.features[1:])
    assert all(not torch.equal(one.features[0], one.features[v]) for v in (1, 2, 3))
    trainer = Trainer(
        TrainConfig(epochs=2, augment="light", progress=False, batch_size=4), freeze="head_only"
    )
    history = fit_with_feature_cache(trainer, model, samples, samples, views=2)
    assert len(history) == 2
    with pytest.raises(ConfigError, match="views must be an int >= 0"):
        fit_with_feature_cache(trainer, model, samples, samples, views=-1)


def test_every_preset_is_listed() -> None:
    assert AUGMENTATIONS == ("none", "flip", "light", "strong")
