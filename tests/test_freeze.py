"""Freeze policies: exactly the intended parameters train; frozen ones stay bit-identical."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torch import nn

from ensemblenet import ConfigError, TrainConfig, Trainer, UnknownNameError, register_freeze_policy
from ensemblenet.models import (
    FREEZE_POLICIES,
    FreezePolicy,
    FreezeUnfreeze,
    ModelConfig,
    TransferModel,
    resolve_freeze,
    set_trainable,
)
from ensemblenet.spec import InputSpec

from .conftest import make_tiny_model, separable_loader


def resnet18_model(seed: int = 0) -> TransferModel:
    """A real torchvision ResNet18 (random init) as a TransferModel, with its downsample BatchNorms."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet18()
    net.fc = nn.Identity()
    config = ModelConfig(
        "torchvision:resnet18", {"name": "linear", "dropout": 0.0}, ("a", "b"), InputSpec(), 512
    )
    return TransferModel(net, nn.Linear(512, 2), config)


def trainable_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_bn_only_selects_batchnorm_by_type_including_downsample() -> None:
    model = resnet18_model()
    model.train()
    resolve_freeze("bn_only").on_epoch_start(model, 0)
    bn_params = {
        f"backbone.{mod_name}.{p_name}"
        for mod_name, mod in model.backbone.named_modules()
        if isinstance(mod, nn.BatchNorm2d)
        for p_name, _ in mod.named_parameters()
    }
    head_params = {f"head.{n}" for n, _ in model.head.named_parameters()}
    assert trainable_names(model) == bn_params | head_params
    # The reference notebook's `"bn" in name` test misses these: ensemblenet must not.
    assert "backbone.layer2.0.downsample.1.weight" in trainable_names(model)
    assert "backbone.layer2.0.downsample.1.bias" in trainable_names(model)
    assert not any("bn" in n for n in ["backbone.layer2.0.downsample.1.weight"])


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], model: nn.Module) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}


def run_steps(model: TransferModel, policy: str | FreezePolicy, epochs: int = 1, lr: float = 1e-2) -> None:
    trainer = Trainer(TrainConfig(epochs=epochs, lr=lr, progress=False, device="cpu"), freeze=policy)
    trainer.fit(model, separable_loader(n=32, size=32))


def test_bn_only_frozen_weights_bit_identical_after_steps() -> None:
    model = resnet18_model()
    before = snapshot(model)
    run_steps(model, "bn_only")
    moved = changed(before, model)
    for key in before:
        is_bn = ".bn" in key or "downsample.1" in key
        if key.startswith("head."):
            assert key in moved, key
        elif is_bn and key.endswith(("weight", "bias", "running_mean", "running_var")):
            assert key in moved, f"BatchNorm {key} should train / update stats"
        elif not is_bn:
            assert key not in moved, f"frozen {key} changed"


def test_bn_only_can_keep_running_stats() -> None:
    model = resnet18_model()
    before = snapshot(model)
    run_steps(model, resolve_freeze("bn_only").__class__(update_stats=False))
    moved = changed(before, model)
    assert not any(k.endswith(("running_mean", "running_var")) for k in moved)
    assert "backbone.layer1.0.bn1.weight" in moved


def test_head_only_keeps_backbone_and_bn_statistics_bit_identical() -> None:
    model = make_tiny_model()
    before = snapshot(model)
    run_steps(model, "head_only", epochs=2)
    moved = changed(before, model)
    assert moved == {k for k in before if k.startswith("head.")}
    assert trainable_names(model) == {"head.weight", "head.bias"}


def test_none_trains_everything() -> None:
    model = make_tiny_model()
    before = snapshot(model)
    run_steps(model, "none")
    moved = changed(before, model)
    weights = {k for k in before if not k.endswith("num_batches_tracked")}
    assert weights <= moved


def test_freeze_unfreeze_phases_and_backbone_learning_rate() -> None:
    model = make_tiny_model()
    policy = FreezeUnfreeze(freeze_epochs=1, backbone_lr_scale=0.25)
    groups = {g["name"]: g["lr_scale"] for g in policy.param_groups(model)}
    assert groups == {"backbone": 0.25, "head": 1.0}

    model.train()
    policy.on_epoch_start(model, 0)
    assert trainable_names(model) == {"head.weight", "head.bias"}
    assert not model.backbone.training  # frozen BatchNorm kept in eval mode
    model.train()
    policy.on_epoch_start(model, 1)
    assert trainable_names(model) == {n for n, _ in model.named_parameters()}

    before = snapshot(model)
    trainer = Trainer(TrainConfig(epochs=1, lr=1e-2, progress=False, device="cpu"), freeze=policy)
    trainer.fit(model, separable_loader(n=32))
    assert trainer.optimizer is not None
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs == {"backbone": pytest.approx(0.25e-2), "head": pytest.approx(1e-2)}
    # epoch 0 is the frozen phase: only the head moved
    assert changed(before, model) == {"head.weight", "head.bias"}


def test_freeze_unfreeze_second_phase_moves_backbone() -> None:
    model = make_tiny_model()
    before = snapshot(model)
    run_steps(model, FreezeUnfreeze(freeze_epochs=1), epochs=2)
    assert "backbone.0.weight" in changed(before, model)


def test_unknown_policy_suggests_close_match() -> None:
    with pytest.raises(UnknownNameError, match="bn_only"):
        resolve_freeze("bn-only")
    with pytest.raises(ConfigError):
        resolve_freeze(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="backbone_lr_scale"):
        FreezeUnfreeze(backbone_lr_scale=0.0)


def test_user_policy_registers_and_trains() -> None:
    @register_freeze_policy("test_first_conv")
    @dataclasses.dataclass(frozen=True)
    class FirstConv(FreezePolicy):
        def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
            set_trainable(model, False)
            set_trainable(model.backbone[0], True)  # type: ignore[index]

    try:
        model = make_tiny_model()
        before = snapshot(model)
        run_steps(model, "test_first_conv")
        moved = changed(before, model)
        assert "backbone.0.weight" in moved
        assert "head.weight" not in moved
    finally:
        FREEZE_POLICIES.unregister("test_first_conv")
