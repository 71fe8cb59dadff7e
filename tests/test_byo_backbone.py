"""Bring your own backbone: a module object works without register_source; its file reloads once the
same factory is registered, and says how otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ensemblenet import (
    Backbone,
    CheckpointError,
    ConfigError,
    InputSpec,
    create_model,
    finetune,
    load_model,
    register_source,
)
from ensemblenet.models import SOURCES

from .conftest import tiny_backbone, write_class_folder

SPEC = InputSpec(size=(16, 16))
pytestmark = pytest.mark.usefixtures("one_thread")


class MyNet(nn.Module):
    """A user's feature extractor: images -> 8 pooled features."""

    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_backbone(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # type: ignore[no-any-return]


def test_a_module_object_fine_tunes_and_its_file_reloads_once_the_factory_is_registered(
    tmp_path: Path,
) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=10)
    torch.manual_seed(0)
    result = finetune(MyNet(), folder, num_features=8, input_spec=SPEC, epochs=2, out=tmp_path / "my.pt",
                      progress=False)  # fmt: skip
    assert result.model.config.backbone == "module:MyNet" and result.model.config.weights is None
    assert result.model.config.extra["module_class"].endswith("test_byo_backbone.MyNet")
    with pytest.raises(CheckpointError, match=r"register_source\('module', lambda name, weights"):
        load_model(result.path)
    register_source("module", lambda name, weights: Backbone(MyNet(), 8, SPEC))
    try:
        reloaded = load_model(result.path)
    finally:
        SOURCES.unregister("module")
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    with torch.inference_mode():
        expected = result.model.to(memory_format=torch.contiguous_format)(images)
        assert torch.equal(reloaded(images), expected)


def test_a_module_needs_its_feature_width_and_a_source_name() -> None:
    with pytest.raises(ConfigError, match=r"needs num_features= .*timm model object"):
        create_model(MyNet(), ["a", "b"])
    with pytest.raises(ConfigError, match="must read 'source:name'"):
        create_model(MyNet(), ["a", "b"], num_features=8, name="plain")
    with pytest.raises(ConfigError, match="only a weights file"):
        create_model(MyNet(), ["a", "b"], num_features=8, weights="IMAGENET1K_V1")
    with pytest.raises(ConfigError, match="for a backbone object"):
        create_model("torchvision:resnet18", ["a", "b"], weights=None, num_features=8)


def test_a_weights_file_is_loaded_into_the_module(tmp_path: Path) -> None:
    torch.manual_seed(1)
    donor = MyNet()
    torch.save(donor.state_dict(), tmp_path / "w.pth")
    model = create_model(MyNet(), ["a", "b"], num_features=8, input_spec=SPEC, weights=tmp_path / "w.pth")
    pairs = zip(model.backbone.state_dict().values(), donor.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert model.config.weights_source == f"file {tmp_path / 'w.pth'}"


def test_a_timm_model_object_states_its_own_width_and_input_and_reloads_by_name(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False)
    model = create_model(net, ["a", "b"], head="linear")
    assert model.config.backbone == "timm:resnet10t" and model.config.num_features == 512
    assert model.spec.size == (176, 176)  # from the model's pretrained config (timm: resnet10t at 176)
    path = tmp_path / "m.pt"
    from ensemblenet import save_model

    save_model(model, path)
    reloaded = load_model(path)  # the built-in timm source rebuilds it
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        assert torch.allclose(reloaded(images), model.eval()(images), atol=1e-6)
