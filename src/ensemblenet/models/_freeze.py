"""Freeze policies: which parameters train, and which BatchNorm layers keep updating statistics.

A policy is a small object with two hooks (after Lightning's ``BaseFinetuning``, without its late
parameter-group bookkeeping):

* ``param_groups(model)`` — called once, before the optimizer is built. Every parameter goes into
  some group from the start, each group with an ``lr_scale``; a frozen parameter simply gets no
  gradient, and PyTorch optimizers skip parameters whose ``grad`` is ``None``. So unfreezing later
  needs no new optimizer and no ``add_param_group``.
* ``on_epoch_start(model, epoch)`` — called at the start of every epoch, right after
  ``model.train()``: set ``requires_grad`` and put frozen BatchNorm layers back in eval mode.

BatchNorm is recognised by module type (any ``torch.nn.modules.batchnorm._BatchNorm``, which
includes ``SyncBatchNorm`` and timm's ``BatchNormAct2d``), never by parameter name: in
torchvision's ResNet the BatchNorm inside ``downsample`` is called ``downsample.1``, so a
``"bn" in name`` test (the reference notebook's) silently leaves it frozen.

A custom policy, registered so ``freeze="my_policy"`` and checkpoints can name it:

>>> import dataclasses
>>> from ensemblenet import register_freeze_policy
>>> @register_freeze_policy("doc_last_stage")
... @dataclasses.dataclass(frozen=True)
... class LastStage(FreezePolicy):
...     def on_epoch_start(self, model, epoch):
...         set_trainable(model.backbone, False)
...         set_trainable(list(model.backbone.children())[-1], True)
...         set_trainable(model.head, True)
>>> resolve_freeze("doc_last_stage")
LastStage()
>>> FREEZE_POLICIES.unregister("doc_last_stage")
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from typing import Any, TypedDict

from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from ._stages import split_backbone

__all__ = [
    "FREEZE_POLICIES",
    "BatchNormOnly",
    "FreezePolicy",
    "FreezeStages",
    "FreezeUnfreeze",
    "HeadOnly",
    "NoFreeze",
    "ParamGroup",
    "batchnorm_modules",
    "freeze_label",
    "parse_freeze",
    "policy_config",
    "register_freeze_policy",
    "resolve_freeze",
    "set_trainable",
]


class ParamGroup(TypedDict):
    """An optimizer parameter group; ``lr_scale`` multiplies the trainer's learning rate."""

    name: str
    params: list[nn.Parameter]
    lr_scale: float


FREEZE_POLICIES: Registry[type[Any]] = Registry("freeze policy")


def register_freeze_policy(name: str) -> Any:
    """Class decorator registering a freeze policy (a frozen dataclass) under ``name``."""
    return FREEZE_POLICIES.register(name)


def batchnorm_modules(module: nn.Module) -> Iterator[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer inside ``module``, found by type."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            yield m


def set_trainable(module: nn.Module, trainable: bool) -> None:
    """Set ``requires_grad`` on every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(trainable)


class FreezePolicy:
    """Base policy: one parameter group at the full learning rate, everything trainable.

    Subclasses override :meth:`on_epoch_start` (and :meth:`param_groups` for per-group rates).
    The model must have ``backbone`` and ``head`` sub-modules (as :class:`~ensemblenet.TransferModel`).
    """

    def param_groups(self, model: nn.Module) -> list[ParamGroup]:
        """Parameter groups for the optimizer (default: backbone and head at the full rate)."""
        return backbone_and_head_groups(model, 1.0)

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Set trainable flags and BatchNorm modes for ``epoch`` (``model`` is in train mode)."""
        set_trainable(model, True)


def backbone_and_head_groups(model: nn.Module, backbone_lr_scale: float) -> list[ParamGroup]:
    """The backbone at ``backbone_lr_scale`` times the learning rate, the head at the full rate."""
    return [
        ParamGroup(
            name="backbone", params=list(_part(model, "backbone").parameters()), lr_scale=backbone_lr_scale
        ),
        ParamGroup(name="head", params=list(_part(model, "head").parameters()), lr_scale=1.0),
    ]


def check_backbone_lr_scale(policy: Any) -> None:
    """``policy.backbone_lr_scale`` must be a number in (0, 1]: the backbone's share of the learning rate."""
    scale = policy.backbone_lr_scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0.0 < float(scale) <= 1.0:
        raise ConfigError(
            f"{type(policy).__name__}.backbone_lr_scale must be a number in (0, 1] (the trainable "
            f"backbone's share of the learning rate; e.g. 0.1), got {scale!r}"
        )


def _part(model: nn.Module, name: str) -> nn.Module:
    part = getattr(model, name, None)
    if not isinstance(part, nn.Module):
        raise ConfigError(
            f"freeze policies need a model with a {name!r} sub-module (like ensemblenet.TransferModel); "
            f"got {type(model).__name__}"
        )
    return part


@register_freeze_policy("none")
@dataclasses.dataclass(frozen=True)
class NoFreeze(FreezePolicy):
    """Everything trains (full fine-tuning)."""


@register_freeze_policy("bn_only")
@dataclasses.dataclass(frozen=True)
class BatchNormOnly(FreezePolicy):
    """All backbone weights frozen except BatchNorm's affine parameters; the head trains.

    The reference notebook's policy. With ``update_stats=True`` (default, as the notebook, whose
    BatchNorm layers are in train mode) running mean/variance adapt to the new data; with False
    they stay at their pretrained values.
    """

    update_stats: bool = True

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        backbone = _part(model, "backbone")
        set_trainable(backbone, False)
        for bn in batchnorm_modules(backbone):
            set_trainable(bn, True)
            if not self.update_stats:
                bn.eval()
        set_trainable(_part(model, "head"), True)


@register_freeze_policy("head_only")
@dataclasses.dataclass(frozen=True)
class HeadOnly(FreezePolicy):
    """Only the head trains. The whole backbone stays in eval mode, so BatchNorm running
    statistics do not drift and backbone dropout is off: the backbone is a fixed feature extractor."""

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        backbone = _part(model, "backbone")
        set_trainable(backbone, False)
        backbone.eval()
        set_trainable(_part(model, "head"), True)


@register_freeze_policy("freeze_unfreeze")
@dataclasses.dataclass(frozen=True)
class FreezeUnfreeze(FreezePolicy):
    """fastai's ``fine_tune``: ``freeze_epochs`` of head-only training, then everything trains,
    the backbone at ``backbone_lr_scale`` times the learning rate (pretrained features move
    less than the new head)."""

    freeze_epochs: int = 1
    backbone_lr_scale: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.freeze_epochs, int) or self.freeze_epochs < 0:
            raise ConfigError(f"freeze_epochs must be an int >= 0, got {self.freeze_epochs!r}")
        check_backbone_lr_scale(self)

    def param_groups(self, model: nn.Module) -> list[ParamGroup]:
        return backbone_and_head_groups(model, float(self.backbone_lr_scale))

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        if epoch < self.freeze_epochs:
            HeadOnly().on_epoch_start(model, epoch)
        else:
            set_trainable(model, True)


@register_freeze_policy("freeze_stages")
@dataclasses.dataclass(frozen=True)
class FreezeStages(FreezePolicy):
    """The first ``stages`` stages of the backbone are frozen and kept in eval mode (BatchNorm uses
    its running statistics, dropout is off); the later stages and the head train fully.

    Because the frozen prefix is a pure function of the image, :func:`fit_with_feature_cache` can
    compute it once. Stages are defined per backbone family in :func:`~ensemblenet.models.split_backbone`.
    A negative count is counted from the end: ``FreezeStages(-1)`` trains the last stage (and the
    head) of any backbone, ``FreezeStages(-2)`` the last two.

    ``backbone_lr_scale`` multiplies the learning rate of the trainable stages (the head keeps the
    full rate), as in :class:`FreezeUnfreeze`: pretrained stages need smaller steps than a new head,
    and at the head's rate they overfit a cached prefix within an epoch or two
    (``FreezeStages(-1, backbone_lr_scale=0.1)``).
    """

    stages: int = 1
    backbone_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.stages, bool) or not isinstance(self.stages, int):
            raise ConfigError(
                f"FreezeStages.stages must be an int (k: freeze the first k stages; -k: all but the last k), "
                f"got {self.stages!r}"
            )
        check_backbone_lr_scale(self)

    def param_groups(self, model: nn.Module) -> list[ParamGroup]:
        return backbone_and_head_groups(model, float(self.backbone_lr_scale))

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        backbone = getattr(model, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise ConfigError(
                f"freeze_stages needs a model with a 'backbone' sub-module, got {type(model).__name__}"
            )
        set_trainable(model, True)
        prefix, _ = split_backbone(backbone, self.stages)
        set_trainable(prefix, False)
        prefix.eval()


def resolve_freeze(policy: str | FreezePolicy) -> FreezePolicy:
    """``"bn_only"`` -> ``BatchNormOnly()``, ``"freeze_stages(-1)"`` -> ``FreezeStages(-1)`` (see
    :func:`parse_freeze`); a policy object is returned as is."""
    if isinstance(policy, str):
        return parse_freeze(policy)
    if isinstance(policy, FreezePolicy) or (
        callable(getattr(policy, "on_epoch_start", None)) and callable(getattr(policy, "param_groups", None))
    ):
        return policy
    raise ConfigError(
        f"freeze must be a policy name ({FREEZE_POLICIES.names()}) or an object with "
        f"param_groups(model) and on_epoch_start(model, epoch); got {policy!r}"
    )


def policy_config(policy: FreezePolicy) -> dict[str, Any]:
    """``{"name": ..., **settings}`` for logs and checkpoints (empty name if unregistered)."""
    name = FREEZE_POLICIES.name_of(policy) or type(policy).__name__
    settings: dict[str, Any] = dataclasses.asdict(policy) if dataclasses.is_dataclass(policy) else {}
    return {"name": name, **settings}  # type: ignore[dict-item]


def parse_freeze(text: str) -> FreezePolicy:
    """A policy from its name, or its name called with settings as :func:`freeze_label` writes them:
    ``"head_only"``, ``"freeze_stages(-1)"``, ``"freeze_stages(-1, backbone_lr_scale=0.1)"``,
    ``"freeze_unfreeze(freeze_epochs=2)"``. Arguments are Python literals (numbers, strings); the
    first positional one is the policy's first setting. So one string names a policy in a recipe,
    on the command line (``--freeze``) and in a table.

    >>> parse_freeze("freeze_stages(-1, backbone_lr_scale=0.1)")
    FreezeStages(stages=-1, backbone_lr_scale=0.1)
    """
    form = "NAME or NAME(ARG, KEY=VALUE, ...), e.g. 'freeze_stages(-1, backbone_lr_scale=0.1)'"
    if "(" not in text:  # a bare name: the registry's error lists the names and suggests the nearest
        return FREEZE_POLICIES.get(text.strip())()  # type: ignore[no-any-return]
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ConfigError(f"freeze={text!r} is not {form}") from None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name)):
        raise ConfigError(f"freeze={text!r} is not {form}")
    cls = FREEZE_POLICIES.get(tree.func.id)
    try:
        args = [ast.literal_eval(a) for a in tree.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in tree.keywords if k.arg is not None}
    except ValueError:
        raise ConfigError(
            f"freeze={text!r}: the settings must be literals (numbers, strings); {form}"
        ) from None
    try:
        return cls(*args, **kwargs)  # type: ignore[no-any-return]
    except TypeError as error:
        fields = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
        raise ConfigError(f"freeze={text!r}: {error}; {tree.func.id} takes {fields}") from None


def freeze_label(policy: str | FreezePolicy) -> str:
    """A short name for a policy that :func:`parse_freeze` reads back: its registered name, with the
    settings that differ from the defaults (a stage count always, first): ``"head_only"``,
    ``"freeze_stages(-1)"``, ``"freeze_stages(-1, backbone_lr_scale=0.1)"``, ``"bn_only"``..."""
    resolved = resolve_freeze(policy)
    config = policy_config(resolved)
    try:
        defaults = policy_config(type(resolved)())
    except TypeError:  # a policy class with required arguments: show every setting
        defaults = {}
    shown = {k: v for k, v in config.items() if k != "name" and (k == "stages" or defaults.get(k) != v)}
    if not shown:
        return str(config["name"])
    arguments = [repr(shown.pop("stages"))] if "stages" in shown else []  # positional, as it is written
    arguments += [f"{k}={v!r}" for k, v in shown.items()]
    return f"{config['name']}(" + ", ".join(arguments) + ")"
