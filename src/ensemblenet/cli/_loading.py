"""Loading the models or the ensemble a command works on, and the device it runs on."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..data import SPLIT_FILE, Samples, file_hashes, load_split, scan_folder
from ..ensemble import Ensemble
from ..errors import ConfigError, DataError
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


def _held_out_data(args: argparse.Namespace, what: str) -> Samples | str:
    """The labelled images a command evaluates on: ``DATA``, or ``--split PART RUN_DIR``.

    Data given as a folder is checked against the training files recorded beside the models
    (``split.json`` / ``<model>.split.json``): a model is never judged on images it was trained on.
    """
    split = getattr(args, "split", None)
    data = getattr(args, "data", None) if what != "val" else getattr(args, "val", None)
    if split is not None:
        part, run_dir = split
        if part not in ("train", "val", "test"):
            raise ConfigError(f"--split takes a part (val or test) and a run folder, got part {part!r}")
        if part == "train":
            raise ConfigError(
                "--split train would judge the models on their own training images; use val or test"
            )
        return load_split(run_dir, verify=(part,)).part(part)
    if data is None:
        hint = (
            "--val FOLDER or --split val RUN_DIR"
            if what == "val"
            else "DATA (a labelled folder) or --split test RUN_DIR"
        )
        raise ConfigError(f"no images to {what} on: give {hint}")
    _refuse_training_images(_model_paths(args), data)
    return str(data)


def _model_paths(args: argparse.Namespace) -> list[str]:
    return list(getattr(args, "model", None) or getattr(args, "models", None) or [])


def _refuse_training_images(model_paths: Sequence[str], data: str) -> None:
    trained: dict[str, str] = {}
    for model in model_paths:
        path = Path(model)
        for record in (path.with_name(path.stem + ".split.json"), path.parent / SPLIT_FILE):
            if record.is_file():
                saved = load_split(record, verify=())
                if "train" in saved.parts:
                    for file, digest in zip(saved.parts["train"].paths, saved.hashes["train"], strict=True):
                        trained.setdefault(digest, f"{file} (a training image of {model})")
    if not trained:
        return
    samples = scan_folder(data, verify=False)
    digests = file_hashes(samples)
    clash = [p for p in samples.paths if digests[p] in trained]
    if clash:
        raise DataError(
            f"{len(clash)} of the {len(samples)} images in {data} are training images of these models (same "
            f"bytes), e.g. {clash[0]} = {trained[digests[clash[0]]]}; evaluate on held-out images, e.g. "
            "--split test RUN_DIR"
        )
