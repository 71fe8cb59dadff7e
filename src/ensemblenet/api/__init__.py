"""The top of the library: one call from a folder of images to trained, saved models.

:func:`finetune` trains one backbone with a new head under a :class:`Recipe` and saves the best
model (with its split and a ``metrics.csv`` beside it); :func:`train_ensemble` trains several
members on the same split, one after another or in parallel processes. Both are what the
``ensemblenet train`` and ``train-ensemble`` commands call, with the same options and defaults.
Recipes are named (``"fast"``, the default; ``"reference"``; ``"full"``), overridable field by
field, and registrable (:func:`register_recipe`). :func:`distill` trains one student model on a
trained ensemble's probabilities (``ensemblenet distill``). :func:`choose_freeze` chooses where to
cut a backbone (head only, the last stages, BatchNorm) on validation.
"""

from ._choose_freeze import FreezeChoice, choose_freeze, freeze_label
from ._distill import TIMED_IMAGES, DistillResult, default_student_path, distill
from ._finetune import FinetuneResult, default_model_path, file_stem, finetune, run_files
from ._members import member_paths, train_ensemble
from ._recipes import (
    COMBINE_CHOICES,
    DEFAULT_RECIPE,
    RECIPES,
    Recipe,
    get_recipe,
    list_recipes,
    parse_members,
    register_recipe,
)
from ._splits import VAL_FROM_TRAIN, Splits, resolve_splits
from ._trained import MemberResult, TrainedEnsemble

__all__ = [
    "COMBINE_CHOICES",
    "DEFAULT_RECIPE",
    "RECIPES",
    "TIMED_IMAGES",
    "VAL_FROM_TRAIN",
    "DistillResult",
    "FinetuneResult",
    "FreezeChoice",
    "MemberResult",
    "Recipe",
    "Splits",
    "TrainedEnsemble",
    "choose_freeze",
    "default_model_path",
    "default_student_path",
    "distill",
    "file_stem",
    "finetune",
    "freeze_label",
    "get_recipe",
    "list_recipes",
    "member_paths",
    "parse_members",
    "register_recipe",
    "resolve_splits",
    "run_files",
    "train_ensemble",
]
