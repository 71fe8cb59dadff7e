"""The top of the library: one call from a folder of images to trained, saved models.

:func:`finetune` trains one backbone with a new head and saves the best model;
:func:`train_ensemble` trains several members on the same split, one after another or in
parallel processes. Both are what the ``ensemblenet train`` and ``train-ensemble`` commands call.
:func:`distill` trains one student model on a trained ensemble's probabilities (``ensemblenet
distill``).
"""

from ._distill import DistillResult, default_student_path, distill
from ._finetune import FinetuneResult, default_model_path, file_stem, finetune
from ._members import MemberResult, member_paths, train_ensemble

__all__ = [
    "DistillResult",
    "FinetuneResult",
    "MemberResult",
    "default_model_path",
    "default_student_path",
    "distill",
    "file_stem",
    "finetune",
    "member_paths",
    "train_ensemble",
]
