"""Opt-in fast CPU inference (ensemblenet.optimize_for_cpu): same probabilities as the default layout."""

from __future__ import annotations

import pytest
import torch

from ensemblenet.ensemble import Ensemble, optimize_for_cpu
from ensemblenet.errors import ConfigError
from ensemblenet.models import create_model
from ensemblenet.spec import InputSpec

from .conftest import make_tiny_model


def test_ensemble_probabilities_equal_eager_within_1e5() -> None:
    members = [
        make_tiny_model(spec=InputSpec(size=(16, 16)), seed=0),
        make_tiny_model(spec=InputSpec(size=(20, 20), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)), seed=1),
    ]
    images = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8)
    ensemble = Ensemble(members)
    eager = ensemble.predict_proba(images, progress=False)
    assert optimize_for_cpu(ensemble) is ensemble
    weight = members[0].backbone[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    torch.testing.assert_close(ensemble.predict_proba(images, progress=False), eager, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["torchvision:mobilenet_v2", "timm:tf_efficientnet_lite0"])
def test_real_architecture_logits_equal_eager(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, ("a", "b"), input_spec=InputSpec(size=(64, 64)), weights=None).eval()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        eager = model(images)
    optimize_for_cpu([model])
    with torch.inference_mode():
        fast = model(images)
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-4)
    assert model.backbone.training is False


def test_converted_model_still_trains() -> None:
    model = optimize_for_cpu(make_tiny_model())
    model.train()
    model(torch.rand(2, 3, 16, 16)).sum().backward()
    assert model.backbone[0].weight.grad is not None


def test_bad_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Ensemble, a model"):
        optimize_for_cpu(42)  # type: ignore[type-var]
