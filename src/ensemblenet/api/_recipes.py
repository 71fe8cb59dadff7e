"""Recipes: everything a fine-tuning run needs, named, documented and overridable field by field.

A :class:`Recipe` is a frozen dataclass: what to freeze, which head, how long and how fast to
train, how to augment, whether to cache frozen features, and how an ensemble of such members is
combined. :func:`~ensemblenet.finetune` and :func:`~ensemblenet.train_ensemble` take one by
name (``recipe="fast"``) or as an object; any field can be overridden in the same call
(``finetune(..., recipe="fast", epochs=20)``) or with :func:`dataclasses.replace`.

>>> from ensemblenet import get_recipe, list_recipes
>>> list_recipes()
['fast', 'full', 'reference', 'strong']
>>> fast = get_recipe("fast")
>>> fast.freeze, fast.feature_cache, fast.epochs
('head_only', True, 10)
>>> fast.replace(epochs=20).epochs      # None leaves a field as it is
20

The built-in recipes (measured on three data sets in the docs' recipes page):

* ``"fast"`` (the default): the backbone frozen in eval mode (``head_only``), its features computed
  once (the frozen-feature cache), a fresh ``mlp`` head trained for 10 epochs with a cosine
  schedule; the combination chosen on validation (0.1's example called it ``best``).
* ``"reference"``: the reference notebook unchanged: ``bn_only``, 2 epochs, Adam 1e-3 constant,
  batch 32, no augmentation, members combined by the mean.
* ``"strong"``: for the benchmark: a linear head with dropout, AdamW with weight decay and a floor of
  300 optimizer steps (heads that do not memorize the cached features, on small and large data
  alike), flip test-time augmentation where it helps on validation.
* ``"full"``: fastai's ``fine_tune``: one epoch of the head alone, then the whole network with the
  backbone at a tenth of the head's learning rate (discriminative learning rates), cosine schedule
  with warm-up, AdamW with weight decay, light augmentation, label smoothing.

Register your own with :func:`register_recipe`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..data import resolve_augment
from ..errors import ConfigError
from ..models import (
    FreezePolicy,
    FreezeUnfreeze,
    Head,
    head_config,
    policy_config,
    resolve_freeze,
    resolve_head,
)
from ..registry import Registry
from ..strategies import COMBINATIONS
from ..training import TrainConfig

__all__ = [
    "COMBINE_CHOICES",
    "DEFAULT_RECIPE",
    "RECIPES",
    "TTA_CHOICES",
    "Recipe",
    "get_recipe",
    "list_recipes",
    "parse_members",
    "register_recipe",
]

#: How a recipe's members are combined: a fixed combination, or ``"auto"`` (chosen on validation).
COMBINE_CHOICES: tuple[str, ...] = (*COMBINATIONS, "auto")

#: Test-time augmentation choices of a recipe: off, always the horizontal flip, or chosen on validation.
TTA_CHOICES: tuple[str, ...] = ("none", "flip", "auto")

#: The recipe used when none is named (chosen by measurement; see the recipes page of the docs).
DEFAULT_RECIPE = "fast"


@dataclass(frozen=True)
class Recipe:
    """A complete fine-tuning recipe (see the module docstring for the built-in ones).

    Attributes:
        name: how it is registered and reported.
        freeze: a freeze policy name or object (``"head_only"``, ``"bn_only"``, ``"none"``,
            ``"freeze_unfreeze"``, ``FreezeUnfreeze(freeze_epochs=1, backbone_lr_scale=0.1)``...).
        head: a head name, ``{"name": ..., **settings}`` or object.
        min_steps: a floor on optimizer steps: ``epochs`` is raised to
            ``ceil(min_steps / steps_per_epoch)`` when the training split is small, so a head
            gets the same amount of training on 200 images as on 20,000 (0: off). An explicit
            ``epochs=`` given to :func:`~ensemblenet.finetune` (or ``--epochs``) is taken as given.
        epochs, lr, batch_size, optimizer, schedule, warmup, weight_decay, label_smoothing,
            grad_clip: the :class:`~ensemblenet.TrainConfig` fields of the same names.
        augment: ``"none"``, ``"flip"``, ``"light"`` or ``"strong"`` (see :mod:`ensemblenet.data`).
        feature_cache: compute the frozen backbone's features once and train the head on them
            (needs a policy that keeps the backbone, or a prefix of it, frozen in eval mode).
        feature_views: augmented views per image kept in the feature cache when ``augment`` is
            ``"light"`` or ``"strong"`` (ignored otherwise; ``"flip"`` caches the mirrored images).
        combine: how :meth:`Ensemble.fit_combination <ensemblenet.Ensemble.fit_combination>`
            combines members trained with it: ``"mean"``, ``"weighted"``, ``"calibrated"`` or
            ``"auto"`` (chosen on the validation split by cross-fitted log-loss).
        members: the backbones an ensemble trained with this recipe uses when none are given
            (:func:`parse_members` reads a user's own list).
        refit: after the run, train a second model on train + validation for the epochs validation
            chose, saved as ``<stem>.refit.pt`` (see :mod:`ensemblenet.api`); costs one more run
            (with the feature cache: one more feature pass over train + validation).
        tta: test-time augmentation of the ensemble: ``"none"``, ``"flip"`` (each member also sees
            the mirrored image: twice the prediction cost) or ``"auto"`` (flip if it lowers the
            cross-fitted validation log-loss of the chosen combination).
        description: one paragraph: what it is for.
    """

    name: str
    freeze: str | FreezePolicy = "head_only"
    head: str | Mapping[str, Any] | Head = "mlp"
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adam"
    schedule: str = "cosine"
    warmup: float = 0.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    augment: str = "none"
    feature_cache: bool = True
    feature_views: int = 4
    combine: str = "auto"
    min_steps: int = 0
    tta: str = "none"
    refit: bool = False
    members: tuple[str, ...] = ("torchvision:mobilenet_v2", "timm:tf_efficientnet_lite0")
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"a recipe needs a non-empty name, got {self.name!r}")
        if self.combine not in COMBINE_CHOICES:
            raise ConfigError(
                f"Recipe.combine={self.combine!r}: must be one of {list(COMBINE_CHOICES)} ('auto' chooses "
                "among the others on the validation split)"
            )
        if self.tta not in TTA_CHOICES:
            raise ConfigError(
                f"Recipe.tta={self.tta!r}: must be one of {list(TTA_CHOICES)} ('auto' flips the images "
                "at test time only if that helps on the validation split)"
            )
        if isinstance(self.members, str) or not all(isinstance(m, str) and m for m in self.members):
            raise ConfigError(
                f"Recipe.members={self.members!r}: must be a sequence of backbone names, e.g. "
                "('torchvision:mobilenet_v2', 'timm:tf_efficientnet_lite0')"
            )
        object.__setattr__(self, "members", tuple(self.members))
        if not isinstance(self.refit, bool):
            raise ConfigError(f"Recipe.refit={self.refit!r}: must be True or False")
        steps = self.min_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"Recipe.min_steps={self.min_steps!r}: must be an int >= 0 (0: no floor)")
        views = self.feature_views
        if isinstance(views, bool) or not isinstance(views, int) or views < 0:
            raise ConfigError(f"Recipe.feature_views={self.feature_views!r}: must be an int >= 0")
        augmentation = resolve_augment(self.augment)  # an unknown preset lists the valid ones
        object.__setattr__(self, "augment", augmentation.name if augmentation else "none")
        if self.feature_cache and augmentation is not None and not augmentation.only_flips and views == 0:
            raise ConfigError(
                f"Recipe {self.name!r}: augment={augmentation.name!r} with the frozen-feature cache and "
                "feature_views=0 would train on unaugmented features only; give feature_views >= 1 (e.g. 4) "
                "or feature_cache=False"
            )
        resolve_freeze(self.freeze)
        resolve_head(self.head)
        self.train_config()  # validates epochs, lr, optimizer, schedule... with TrainConfig's messages

    def replace(self, **changes: Any) -> Recipe:
        """A copy with the given fields changed; ``None`` values leave a field as it is (so
        optional arguments can be passed straight through)."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise ConfigError(f"Recipe has no field(s) {unknown}; its fields: {names}")
        given = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self

    def train_config(self, **run: Any) -> TrainConfig:
        """The :class:`~ensemblenet.TrainConfig` of this recipe, with run settings (``seed``,
        ``device``, ``progress``...) added."""
        return TrainConfig(
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            schedule=self.schedule,
            warmup=self.warmup,
            weight_decay=self.weight_decay,
            label_smoothing=self.label_smoothing,
            grad_clip=self.grad_clip,
            augment=self.augment,
            **run,
        )

    def epochs_for(self, n_train: int) -> int:
        """The epochs to run on ``n_train`` training images: :attr:`epochs`, raised so that at least
        :attr:`min_steps` optimizer steps are taken.

        >>> r = Recipe("doc", epochs=10, batch_size=64, min_steps=300)
        >>> r.epochs_for(13_120), r.epochs_for(244)
        (10, 75)
        """
        steps_per_epoch = max(1, math.ceil(n_train / self.batch_size))
        return max(self.epochs, math.ceil(self.min_steps / steps_per_epoch))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (policy and head as their registered names and settings)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["freeze"] = policy_config(resolve_freeze(self.freeze))
        data["head"] = head_config(resolve_head(self.head))
        return data

    def __str__(self) -> str:
        freeze = policy_config(resolve_freeze(self.freeze))
        freeze_text = freeze["name"] + "".join(f" {k}={v}" for k, v in freeze.items() if k != "name")
        cache = ", frozen-feature cache" if self.feature_cache else ""
        if self.feature_cache and self.augment in ("light", "strong"):
            cache += f" ({self.feature_views} augmented views)"
        head = head_config(resolve_head(self.head))["name"]
        floor = f" (at least {self.min_steps} steps)" if self.min_steps else ""
        tta = f", flip TTA {self.tta}" if self.tta != "none" else ""
        tta += ", refit on train+val" if self.refit else ""
        return (
            f"recipe {self.name!r}: freeze {freeze_text}, head {head}, "
            f"{self.optimizer} lr {self.lr:g}, {self.epochs} epochs, {self.schedule} schedule, batch "
            f"{self.batch_size}{floor}, augment {self.augment}{cache}, combine {self.combine}{tta}"
        )


RECIPES: Registry[Recipe] = Registry("recipe")


def parse_members(text: str | None, recipe: str | Recipe | None = None) -> list[dict[str, str]]:
    """Ensemble members from ``"NAME[=WEIGHTS],NAME..."`` (a command line's ``--members``), or the
    recipe's own :attr:`Recipe.members` when ``text`` is empty; as :func:`train_ensemble` takes them.

    >>> for member in parse_members("torchvision:resnet18=r18.pth,timm:tf_efficientnet_lite0"):
    ...     print(member)
    {'backbone': 'torchvision:resnet18', 'weights': 'r18.pth'}
    {'backbone': 'timm:tf_efficientnet_lite0', 'weights': 'DEFAULT'}
    >>> [m["backbone"] for m in parse_members(None, "strong")][2:]
    ['timm:tf_efficientnet_lite1', 'timm:tf_efficientnet_lite2']

    Raises:
        ConfigError: an empty name (``"a,,b"``, ``"=w.pth"``).
    """
    items = text.split(",") if text else list(get_recipe(recipe).members)
    members = []
    for item in items:
        name, _, weights = item.strip().partition("=")
        if not name:
            raise ConfigError(
                f"members {text!r}: every entry needs a backbone name, as NAME or NAME=WEIGHTS separated by "
                "commas, e.g. 'torchvision:mobilenet_v2,timm:tf_efficientnet_lite0=lite0.pth'"
            )
        members.append({"backbone": name, "weights": weights or "DEFAULT"})
    return members


def register_recipe(recipe: Recipe) -> Recipe:
    """Make ``recipe`` selectable by its name (``finetune(..., recipe=name)``, ``--recipe name``).

    Raises:
        DuplicateNameError: the name is taken.
    """
    if not isinstance(recipe, Recipe):
        raise ConfigError(f"register_recipe needs a Recipe, got {type(recipe).__name__}")
    return RECIPES.register(recipe.name, recipe)


def get_recipe(recipe: str | Recipe | None = None) -> Recipe:
    """The registered recipe ``recipe`` names (default :data:`DEFAULT_RECIPE`), or ``recipe`` itself."""
    if recipe is None:
        return RECIPES.get(DEFAULT_RECIPE)
    if isinstance(recipe, Recipe):
        return recipe
    return RECIPES.get(recipe)


def list_recipes() -> list[str]:
    """The registered recipe names, sorted."""
    return RECIPES.names()


register_recipe(
    Recipe(
        "fast",
        freeze="head_only",
        head="mlp",
        epochs=10,
        lr=1e-3,
        batch_size=64,
        schedule="cosine",
        augment="none",
        feature_cache=True,
        combine="auto",
        description=(
            "The default. The backbone stays frozen in eval mode, so its features are a pure function of the "
            "image and are computed once; the head then trains for 10 epochs at almost no cost. On the three "
            "data sets measured it matched or beat the reference recipe, several times faster on a CPU. "
            "Augmentation is off: on validation it made no measurable difference, and each augmented view "
            "costs one more pass of the backbone over the training images (augment='light' turns it on, "
            "with feature_views=4 cached views per image)."
        ),
    )
)
register_recipe(
    Recipe(
        "reference",
        freeze="bn_only",
        head="mlp",
        epochs=2,
        lr=1e-3,
        batch_size=32,
        schedule="constant",
        augment="none",
        feature_cache=False,
        combine="mean",
        description=(
            "The reference notebook, unchanged: BatchNorm-only fine-tuning, "
            "Linear(n, 512) -> Linear(512, C), Adam 1e-3 for 2 epochs, batch 32, no augmentation, the mean "
            "of the members' probabilities. What the project's published Dogs vs Cats numbers reproduce."
        ),
    )
)
register_recipe(
    Recipe(
        "full",
        freeze=FreezeUnfreeze(freeze_epochs=1, backbone_lr_scale=0.1),
        head="mlp",
        epochs=5,
        lr=1e-3,
        batch_size=32,
        optimizer="adamw",
        schedule="cosine",
        warmup=0.1,
        weight_decay=0.01,
        label_smoothing=0.1,
        augment="light",
        feature_cache=False,
        combine="auto",
        description=(
            "fastai's fine_tune: one epoch with only the head training, then every layer, the backbone at a "
            "tenth of the head's learning rate; AdamW with weight decay, cosine schedule with warm-up, light "
            "augmentation, label smoothing. The most expensive: every epoch runs the backbone forwards and "
            "backwards."
        ),
    )
)
register_recipe(
    Recipe(
        "strong",
        freeze="head_only",
        head={"name": "linear", "dropout": 0.2},
        epochs=10,
        min_steps=300,
        lr=1e-3,
        batch_size=64,
        optimizer="adamw",
        weight_decay=0.01,
        schedule="cosine",
        augment="none",
        feature_cache=True,
        combine="auto",
        tta="auto",
        members=(
            "torchvision:mobilenet_v2",
            "timm:tf_efficientnet_lite0",
            "timm:tf_efficientnet_lite1",
            "timm:tf_efficientnet_lite2",
        ),
        description=(
            "The benchmark recipe: the frozen-feature cache of 'fast' with a head that does not memorize "
            "the cached features (a linear layer after dropout 0.2, AdamW with weight decay 0.01; the MLP of "
            "'fast' reaches its best validation log-loss at epoch 1 or 2 on large data and rises after), "
            "trained for at least 300 optimizer steps (75 epochs on 244 images, 10 on 13,000), and "
            "horizontal-flip test-time augmentation when it lowers the validation log-loss. Give it "
            "stronger members (EfficientNet-Lite1 and Lite2 beside MobileNetV2 and Lite0)."
        ),
    )
)
