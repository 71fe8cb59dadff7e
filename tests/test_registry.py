"""Registry and heads: duplicates raise, unknown names suggest close matches, heads build right."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from ensemblenet import ConfigError, DuplicateNameError, LinearHead, MLPHead, UnknownNameError, register_head
from ensemblenet.models import HEADS, head_config, resolve_head
from ensemblenet.registry import Registry


def test_registry_register_get_duplicate_unknown() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", 1)

    @reg.register("beta")
    def _beta() -> int:
        return 2

    assert reg.get("alpha") == 1 and reg.names() == ["alpha", "beta"] and "beta" in reg
    with pytest.raises(DuplicateNameError, match="alpha"):
        reg.register("alpha", 3)
    with pytest.raises(UnknownNameError) as info:
        reg.get("alpah")
    message = str(info.value)
    assert "Did you mean 'alpha'" in message and "unknown widget: 'alpah'" in message
    assert "Valid options" in message
    reg.unregister("alpha")
    assert "alpha" not in reg


def test_mlp_head_defaults_are_the_reference_head() -> None:
    head = MLPHead().build(512, 2)
    assert [type(m) for m in head] == [nn.Linear, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[1].out_features) == (512, 512, 2)  # type: ignore[index]
    relu = MLPHead(hidden=64, activation="relu", dropout=0.5).build(10, 3)
    assert [type(m) for m in relu] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert relu(torch.zeros(4, 10)).shape == (4, 3)


def test_head_resolution_and_bad_settings() -> None:
    assert resolve_head("linear") == LinearHead()
    assert resolve_head({"name": "mlp", "hidden": 8}) == MLPHead(hidden=8)
    assert head_config(MLPHead(hidden=8)) == {"name": "mlp", "hidden": 8, "activation": None, "dropout": 0.0}
    with pytest.raises(UnknownNameError, match="'mlp'"):
        resolve_head("mpl")
    with pytest.raises(ConfigError, match="activation"):
        MLPHead(activation="tanhh")
    with pytest.raises(ConfigError, match="dropout"):
        LinearHead(dropout=1.5)
    with pytest.raises(ConfigError, match="bad settings"):
        resolve_head({"name": "mlp", "hiden": 3})


def test_custom_head_round_trips_through_config() -> None:
    @register_head("test_bottleneck")
    @dataclasses.dataclass(frozen=True)
    class Bottleneck:
        width: int = 4

        def build(self, in_features: int, num_classes: int) -> nn.Module:
            return nn.Sequential(nn.Linear(in_features, self.width), nn.Linear(self.width, num_classes))

    try:
        config = head_config(Bottleneck(width=6))
        assert config == {"name": "test_bottleneck", "width": 6}
        assert resolve_head(config) == Bottleneck(width=6)
    finally:
        HEADS.unregister("test_bottleneck")

    @dataclasses.dataclass(frozen=True)
    class Unregistered:
        def build(self, in_features: int, num_classes: int) -> nn.Module:
            return nn.Linear(in_features, num_classes)

    with pytest.raises(ConfigError, match="register_head"):
        head_config(Unregistered())
