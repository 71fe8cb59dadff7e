"""The top of the library: one call from a folder of images to trained, saved models.

:func:`finetune` trains one backbone with a new head and saves the best model;
:func:`train_ensemble` trains several members on the same split, one after another or in
parallel processes. Both are what the ``ensemblenet train`` and ``train-ensemble`` commands call.
"""

from ._finetune import FinetuneResult, default_model_path, file_stem, finetune
from ._members import MemberResult, member_paths, train_ensemble

__all__ = [
    "FinetuneResult",
    "MemberResult",
    "default_model_path",
    "file_stem",
    "finetune",
    "member_paths",
    "train_ensemble",
]
