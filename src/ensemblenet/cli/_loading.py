"""Loading the models or the ensemble a command works on, and the device it runs on."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..ensemble import Ensemble
from ..errors import ConfigError
from ..models import peek_format


def _load_ensemble(
    paths: Sequence[str],
    strategy: str | None,
    weights: Sequence[float] | None,
    tta: str | None = None,
    *,
    trust_code: bool = False,
) -> Ensemble:
    """Model files (one is fine) or one ensemble file -> an Ensemble.

    An ensemble file keeps its own fitted strategy unless ``strategy``/``weights`` are given.
    ``trust_code`` (``--trust-code``) allows backbones whose source runs code.
    """
    if not paths:
        raise ConfigError("no model given; pass -m/--model PATH (repeat it for an ensemble)")
    kinds = [peek_format(p) for p in paths]
    if "ensemblenet.ensemble" in kinds:
        if len(paths) > 1:
            raise ConfigError(
                f"{paths[kinds.index('ensemblenet.ensemble')]!r} is an ensemble file; pass it alone "
                "(-m ENSEMBLE) or pass the member model files instead"
            )
        ensemble = Ensemble.load(paths[0], trust_code=trust_code)
        if strategy is not None or weights is not None or tta is not None:
            ensemble = Ensemble(ensemble.members, strategy=strategy or "mean", weights=weights, tta=tta)
        return ensemble
    ensemble = Ensemble.from_checkpoints(
        list(paths), strategy=strategy or "mean", weights=weights, trust_code=trust_code
    )
    if tta is not None:
        ensemble = Ensemble(ensemble.members, strategy=ensemble.strategy, tta=tta)
    return ensemble


def _device(args: argparse.Namespace) -> str | None:
    return None if args.device == "auto" else str(args.device)
