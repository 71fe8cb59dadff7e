"""Frozen-feature cache (ensemblenet.fit_with_feature_cache) and the freeze_stages policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ensemblenet.data import Samples, make_loader, scan_folder
from ensemblenet.errors import ConfigError
from ensemblenet.models import (
    FreezeStages,
    TransferModel,
    backbone_stages,
    load_backbone,
    resolve_freeze,
    split_backbone,
)
from ensemblenet.training import TrainConfig, Trainer, compute_features, fit_with_feature_cache, frozen_stages

from .conftest import make_tiny_model, write_class_folder


@pytest.mark.parametrize(
    ("name", "n_stages"),
    [("torchvision:mobilenet_v2", 19), ("torchvision:resnet18", 5), ("timm:tf_efficientnet_lite0", 8)],
)
def test_prefix_then_rest_equals_backbone(name: str, n_stages: int) -> None:
    torch.manual_seed(0)
    backbone = load_backbone(name).module.eval()
    stages, _ = backbone_stages(backbone)
    assert len(stages) == n_stages
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        expected = backbone(x)
        for k in (0, n_stages // 2, None):
            prefix, rest = split_backbone(backbone, k)
            torch.testing.assert_close(rest(prefix(x)), expected, rtol=1e-5, atol=1e-5)


def _samples(tmp_path: Path) -> Samples:
    return scan_folder(write_class_folder(tmp_path / "images", per_class=10, size=(20, 20)))


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float16, 2e-3)])
@pytest.mark.parametrize("stages", [3, None])
def test_cached_features_give_the_uncached_logits(
    tmp_path: Path, dtype: torch.dtype, tol: float, stages: int | None
) -> None:
    """Stated tolerance: float32 cache 1e-5, float16 cache 2e-3 (absolute, logits of order 1)."""
    samples = _samples(tmp_path)
    model = make_tiny_model(classes=samples.classes, spec=None)
    model.backbone[1].running_mean.uniform_(-0.5, 0.5)  # non-trivial BatchNorm statistics
    model.backbone[1].running_var.uniform_(0.5, 2.0)
    cache = compute_features(model, samples, stages, dtype=dtype)
    assert cache.features.dtype == dtype and cache.skipped == []
    _, rest = split_backbone(model.backbone, stages)
    model.eval()
    with torch.inference_mode():
        images = next(iter(make_loader(samples, model.spec, batch_size=len(samples)))).images[0]
        expected = model(images)
        got = model.head(rest(cache.features[0].float()))
    torch.testing.assert_close(got[cache.indices.argsort()], expected, rtol=0, atol=tol)


def _train(tmp_path: Path, policy: object, cached: bool, augment: bool = False) -> TransferModel:
    samples = _samples(tmp_path)
    model = make_tiny_model(classes=samples.classes, seed=1)
    trainer = Trainer(
        TrainConfig(epochs=3, lr=1e-2, batch_size=4, progress=False, augment=augment), freeze=policy
    )  # type: ignore[arg-type]
    if cached:
        fit_with_feature_cache(trainer, model, samples, samples, dtype=torch.float32)
    else:
        trainer.fit(model, samples, samples)
    return model


@pytest.mark.parametrize("policy", [FreezeStages(3), "head_only"])
def test_training_on_cached_features_equals_training_on_images(tmp_path: Path, policy: object) -> None:
    """No augmentation, float32 cache: same batches, same steps, so the same weights (to 1e-5)."""
    uncached = _train(tmp_path / "a", policy, cached=False)
    cached = _train(tmp_path / "b", policy, cached=True)
    for (name, a), b in zip(uncached.state_dict().items(), cached.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    assert type(cached).forward is TransferModel.forward and "forward" not in vars(cached)
    # The first 3 stages really stayed frozen: BatchNorm statistics and conv weights untouched.
    fresh = make_tiny_model(seed=1)
    torch.testing.assert_close(cached.backbone[0].weight, fresh.backbone[0].weight)
    torch.testing.assert_close(cached.backbone[1].running_mean, fresh.backbone[1].running_mean)


def test_augmented_cache_trains_and_differs_from_unaugmented(tmp_path: Path) -> None:
    plain = _train(tmp_path / "a", FreezeStages(3), cached=True)
    flipped = _train(tmp_path / "b", FreezeStages(3), cached=True, augment=True)
    assert not torch.equal(plain.head.weight, flipped.head.weight)


def test_policy_is_registered_and_freezes_the_prefix() -> None:
    model = make_tiny_model()
    policy = resolve_freeze("freeze_stages")
    assert isinstance(policy, FreezeStages)
    model.train()
    FreezeStages(2).on_epoch_start(model, 0)
    assert not model.backbone[0].weight.requires_grad and not model.backbone[1].training
    assert model.backbone[3].weight.requires_grad and model.backbone[4].training
    with pytest.raises(ConfigError, match="must be an int"):
        FreezeStages(1.5)  # type: ignore[arg-type]


def test_a_negative_stage_count_counts_from_the_end() -> None:
    model = make_tiny_model()
    n = len(backbone_stages(model.backbone)[0])
    for k in range(1, n + 1):
        prefix, rest = split_backbone(model.backbone, -k)
        same_prefix, same_rest = split_backbone(model.backbone, n - k)
        assert list(prefix.steps) == list(same_prefix.steps)  # the same module objects
        assert list(rest.steps) == list(same_rest.steps)
    model.train()
    FreezeStages(-1).on_epoch_start(model, 0)  # everything but the last stage frozen
    frozen, trainable = split_backbone(model.backbone, -1)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in trainable.parameters()) and model.head.weight.requires_grad
    with pytest.raises(ConfigError, match=rf"-{n}\.\.{n}"):
        split_backbone(model.backbone, -(n + 1))


def test_unsuitable_policies_and_backbones_are_config_errors() -> None:
    model = make_tiny_model()
    with pytest.raises(ConfigError, match="BatchNorm"):
        frozen_stages(resolve_freeze("bn_only"), model)
    with pytest.raises(ConfigError, match=r"-8\.\.8"):
        frozen_stages(FreezeStages(9), model)
    with pytest.raises(ConfigError, match="stages of torchvision"):
        backbone_stages(nn.Linear(2, 2))


def test_precomputed_caches_train_like_samples(tmp_path: Path) -> None:
    samples = _samples(tmp_path)
    from_samples = make_tiny_model(classes=samples.classes, seed=1)
    from_caches = make_tiny_model(classes=samples.classes, seed=1)
    config = TrainConfig(epochs=2, lr=1e-2, batch_size=4, progress=False)
    fit_with_feature_cache(Trainer(config, freeze="head_only"), from_samples, samples, samples)
    caches = [compute_features(from_caches, samples, None) for _ in range(2)]
    fit_with_feature_cache(Trainer(config, freeze="head_only"), from_caches, caches[0], caches[1])
    torch.testing.assert_close(from_caches.head.weight, from_samples.head.weight)
    with pytest.raises(ConfigError, match="Samples or FeatureCache"):
        fit_with_feature_cache(Trainer(config, freeze="head_only"), from_caches, [1, 2])


def test_head_only_caches_any_backbone_even_one_whose_stages_are_unknown() -> None:
    """The whole backbone is the prefix under head_only: no stage table is needed (MobileNetV3 has
    none), and the cached features are the backbone's output."""
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    class Unknown(nn.Module):  # a user's own module: no stages known for its type
        def __init__(self) -> None:
            super().__init__()
            self.body = backbone

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    model = Unknown()
    with pytest.raises(ConfigError, match="not Unknown"):
        split_backbone(model, 1)
    prefix, rest = split_backbone(model, None)
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(rest(prefix(x)), model(x))


def test_trainable_stages_learn_at_their_share_of_the_learning_rate(tmp_path: Path) -> None:
    """One Adam step moves each parameter by about its group's learning rate (|m / sqrt(v)| = 1 on
    the first step), so the trainable stage moves ~10x less than the head at backbone_lr_scale=0.1,
    and the frozen prefix not at all."""
    samples = _samples(tmp_path)
    lr = 1e-2
    moved: dict[float, tuple[float, float, float]] = {}
    probe = make_tiny_model(classes=samples.classes, seed=1)
    n = len(backbone_stages(probe.backbone)[0])  # the last stage with weights (pooling stages have none)
    k = next(k for k in range(1, n + 1) if list(split_backbone(probe.backbone, -k)[1].parameters()))
    for scale in (1.0, 0.1):
        model = make_tiny_model(classes=samples.classes, seed=1)
        prefix, rest = split_backbone(model.backbone, -k)
        before = [
            p.detach().clone() for p in (*prefix.parameters(), *rest.parameters(), *model.head.parameters())
        ]
        trainer = Trainer(
            TrainConfig(epochs=1, lr=lr, batch_size=len(samples), progress=False, schedule="constant"),
            freeze=FreezeStages(-k, backbone_lr_scale=scale),
        )
        fit_with_feature_cache(trainer, model, samples, dtype=torch.float32)
        after = [p.detach() for p in (*prefix.parameters(), *rest.parameters(), *model.head.parameters())]
        n_prefix, n_rest = len(list(prefix.parameters())), len(list(rest.parameters()))
        steps = [float((a - b).abs().max()) for a, b in zip(after, before, strict=True)]
        moved[scale] = (
            max(steps[:n_prefix], default=0.0),
            max(steps[n_prefix : n_prefix + n_rest]),
            max(steps[n_prefix + n_rest :]),
        )
    for scale, (prefix_step, stage_step, head_step) in moved.items():
        assert prefix_step == 0.0
        assert head_step == pytest.approx(lr, rel=0.05)
        assert stage_step == pytest.approx(lr * scale, rel=0.05)
    with pytest.raises(ConfigError, match=r"backbone_lr_scale.*\(0, 1\]"):
        FreezeStages(-1, backbone_lr_scale=0.0)
    with pytest.raises(ConfigError, match="backbone_lr_scale"):
        FreezeStages(-1, backbone_lr_scale=True)  # type: ignore[arg-type]
