"""``Ensemble``: several fine-tuned models, one prediction.

Members may use different backbones with different input sizes and normalization: images are
decoded once per batch, resized once per distinct view, and each member normalizes its own input
(:mod:`member inputs <ensemblenet.ensemble>`); a strategy from :mod:`ensemblenet.strategies`
turns the members' probabilities into the ensemble's, and :mod:`ensemblenet.scoring` judges both.
Test-time augmentation, one-file save/load and ONNX export (a self-describing file, run by
:class:`OnnxPredictor`) live here too. :meth:`Ensemble.predict` returns :class:`Predictions`:
class names with probabilities. The members run
through the engine chosen with ``engine=`` (:mod:`ensemblenet.engine`; ``"auto"``: ONNX Runtime on a
CPU when installed).

>>> from ensemblenet import Ensemble
>>> ensemble = Ensemble.from_checkpoints(["resnet18.pt", "resnet34.pt"])  # doctest: +SKIP
>>> print(ensemble.evaluate("../shared/data/dogs-vs-cats-200px"))  # doctest: +SKIP

A newcomer adds an export target beside :func:`export_onnx`.
"""

from ._combination import FlipChoice, fit_combination_and_flip
from ._cpu import optimize_for_cpu
from ._ensemble import Ensemble, load_ensemble
from ._files import ENSEMBLE_FORMAT, ENSEMBLE_FORMAT_VERSION, SavedEnsemble, read_ensemble, save_ensemble
from ._inputs import Data, MemberInputs, labelled_probas, readable_rows, run_members, to_inputs
from ._members import EnsembleParts, check_fitted, check_members, combine_probas
from ._memo import ProbaMemo
from ._onnx import EnsembleGraph, OnnxPredictor, export_onnx, onnx_metadata, run_onnx
from ._predictions import Prediction, Predictions
from ._tta import TTA, MirrorOnly, member_probs, resolve_tta

__all__ = [
    "ENSEMBLE_FORMAT",
    "ENSEMBLE_FORMAT_VERSION",
    "TTA",
    "Data",
    "Ensemble",
    "EnsembleGraph",
    "EnsembleParts",
    "FlipChoice",
    "MemberInputs",
    "MirrorOnly",
    "OnnxPredictor",
    "Prediction",
    "Predictions",
    "ProbaMemo",
    "SavedEnsemble",
    "check_fitted",
    "check_members",
    "combine_probas",
    "export_onnx",
    "fit_combination_and_flip",
    "labelled_probas",
    "load_ensemble",
    "member_probs",
    "onnx_metadata",
    "optimize_for_cpu",
    "read_ensemble",
    "readable_rows",
    "resolve_tta",
    "run_members",
    "run_onnx",
    "save_ensemble",
    "to_inputs",
]
