"""Train the members of an ensemble at the same time: one process per member.

Members are independent (each has its own backbone, seed and checkpoint), so they scale without any
gradient communication: :func:`train_ensemble` runs :func:`~ensemblenet.finetune` for each member,
``parallel`` at a time, each in a fresh process started with ``spawn`` (safe with CUDA and with
threads), with ``torch.set_num_threads(threads)`` so ``parallel`` members share the CPU cores instead
of oversubscribing them, or each on its own GPU (``devices=["cuda:0", "cuda:1"]``).

A member's result depends only on its arguments and seed, not on which process trained it or when:
``finetune`` seeds the head initialisation and every epoch (see :class:`~ensemblenet.TrainConfig`).
Checkpoints are therefore *bit-identical* to training the members one after another with the same
``threads`` (the CPU kernels' summation order depends on the number of threads, so compare runs made
with the same ``threads``; with different thread counts results agree to float rounding).

For one member spread over several GPUs or machines, use ``torchrun`` instead (see
:mod:`ensemblenet.training`); the two compose: several ``torchrun`` jobs, one per member.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import SPLIT_FILE
from ..errors import ConfigError, EnsembleNetError, TrainingError
from ._finetune import file_stem, finetune
from ._recipes import Recipe, get_recipe
from ._splits import resolve_splits
from ._trained import MemberResult, TrainedEnsemble

__all__ = ["MemberResult", "member_paths", "train_ensemble"]

log = logging.getLogger("ensemblenet.api")


@dataclass(frozen=True)
class _Job:
    index: int
    name: str
    kwargs: dict[str, Any]
    threads: int | None
    device: str | None


def _run(job: _Job) -> MemberResult:
    """Train one member (in a worker process, or in this one when running sequentially)."""
    previous_threads = torch.get_num_threads()
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    kwargs = dict(job.kwargs)
    if job.device is not None:
        if kwargs.get("config") is not None:
            kwargs["config"] = dataclasses.replace(kwargs["config"], device=job.device)
        else:
            kwargs["device"] = job.device
    started = time.perf_counter()
    try:
        result = finetune(**kwargs)
    finally:
        torch.set_num_threads(previous_threads)
    config = result.model.config
    return MemberResult(
        name=job.name,
        path=result.path,
        history=result.history,
        test=result.test,
        device=str(next(result.model.parameters()).device),
        seconds=time.perf_counter() - started,
        feature_seconds=result.feature_seconds,
        backbone=config.backbone,
        weights=config.weights,
        weights_source=config.weights_source,
        best_epoch=result.best_epoch,
        refit_path=result.refit_path,
    )


def _unique_name(backbone: str, used: set[str]) -> str:
    name = base = file_stem(backbone) or "member"
    suffix = 2
    while name in used:
        name, suffix = f"{base}-{suffix}", suffix + 1
    used.add(name)
    return name


def member_paths(backbones: Sequence[str], out_dir: str | os.PathLike[str] = "runs") -> list[Path]:
    """Where :func:`train_ensemble` saves members with these backbones (``out_dir/<backbone>.pt``,
    ``-2``, ``-3``... added for repeats), e.g. to check them before training."""
    used: set[str] = set()
    return [Path(out_dir) / f"{_unique_name(b, used)}.pt" for b in backbones]


def _jobs(
    members: Sequence[str | Mapping[str, Any]],
    data: Any,
    common: Mapping[str, Any],
    out_dir: Path,
    threads: int | None,
    devices: Sequence[str] | None,
    resume: bool = False,
) -> list[_Job]:
    jobs: list[_Job] = []
    used: set[str] = set()
    for i, member in enumerate(members):
        if isinstance(member, str):
            member = {"backbone": member}
        if not isinstance(member, Mapping) or "backbone" not in member:
            raise ConfigError(
                f"ensemble member {i} is {member!r}; give a backbone name or a mapping of finetune() "
                "arguments with a 'backbone' key, e.g. {'backbone': 'torchvision:resnet18', 'seed': 1}"
            )
        # Member i seeds its head and shuffling with seed + i unless it names its own (the split
        # uses the common seed, so every member sees the same images): as `train-ensemble` does.
        kwargs = {**common, "seed": int(common.get("seed") or 0) + i, **member, "data": data}
        backbone = kwargs["backbone"]
        name = _unique_name(backbone if isinstance(backbone, str) else type(backbone).__name__, used)
        kwargs.setdefault("out", out_dir / f"{name}.pt")
        kwargs.setdefault("name", name)  # progress bars and epoch lines say which member trains
        out = Path(kwargs["out"])
        state = Path(kwargs.setdefault("state_path", out.with_name(out.stem + ".state.pt")))
        if resume and state.is_file():
            kwargs.setdefault("resume", state)
        device = devices[i % len(devices)] if devices else None
        jobs.append(_Job(index=i, name=name, kwargs=kwargs, threads=threads, device=device))
    return jobs


def train_ensemble(
    members: Sequence[str | Mapping[str, Any]],
    data: Any,
    *,
    parallel: int = 1,
    threads: int | None = None,
    devices: Sequence[str] | None = None,
    out_dir: str | os.PathLike[str] = "runs",
    resume: bool = False,
    **common: Any,
) -> TrainedEnsemble:
    """Fine-tune every member on ``data`` and save each one's best model, ``parallel`` at a time.

    Args:
        members: backbone names, or mappings of :func:`~ensemblenet.finetune` arguments (a
            ``"backbone"`` key required), e.g. ``[{"backbone": "torchvision:resnet18", "seed": 1}, ...]``.
        data: what :func:`~ensemblenet.finetune` takes (a folder, or train/val[/test] folders or
            Samples); it is split once (with the common ``seed`` and ``split``), so every member
            sees the same split, which is saved to ``out_dir/split.json``.
        parallel: how many members train at once. 1 trains them one after another in this process;
            more starts that many worker processes (``spawn``), one member per process.
        threads: ``torch.set_num_threads`` for each member; default: all cores when sequential (the
            current setting), ``max(1, cores // parallel)`` when parallel.
        devices: e.g. ``["cuda:0", "cuda:1"]``: member *i* trains on ``devices[i % len(devices)]``.
        out_dir: where ``<backbone>.pt`` checkpoints go (e.g. ``torchvision_mobilenet_v2.pt``),
            unless a member gives its own ``out``.
        resume: continue members from the resumable states they keep beside their models
            (``<name>.state.pt``), e.g. after an interrupted run; members without one start afresh.
        **common: :func:`~ensemblenet.finetune` arguments for every member (a member's own win),
            e.g. ``epochs=2, weights=None, freeze="bn_only"``. ``seed`` seeds the split; member *i*
            seeds its head and shuffling with ``seed + i`` unless it gives its own.

    Returns:
        A :class:`~ensemblenet.api.TrainedEnsemble`: one :class:`MemberResult` per member, in the
        order of ``members`` (it is a list), with the split and recipe, and methods to combine the
        members on the validation split (``.ensemble()``) and report on the test split (``.report()``).

    Raises:
        ConfigError: a bad ``parallel``, ``threads`` or member.
        TrainingError: a member failed (the message names it; library errors keep their class, e.g. a
            member's ConfigError; the other running members finish, the ones not started are cancelled).

    With ``parallel > 1`` every argument must be picklable and the backbones resolvable in a fresh
    process (built-in sources, or ``register_source`` calls made at import of an importable module),
    and a script must call this under ``if __name__ == "__main__":`` (spawned processes re-import it).
    """
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ConfigError(f"parallel must be an int >= 1 (1 = one member after another), got {parallel!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be an int >= 1 or None, got {threads!r}")
    if not members:
        raise ConfigError("train_ensemble needs at least one member")
    workers = min(parallel, len(members))
    common = dict(common)
    split, limit = common.pop("split", ()) or (), common.pop("limit", None)
    recipe = _common_recipe(common)
    if workers > 1:
        threads = threads or max(1, (os.cpu_count() or 1) // workers)
        common = {"progress": False, **common}  # interleaved progress bars from several processes help no one
    jobs = _jobs(members, None, common, Path(out_dir), threads, devices, resume)  # checks the members
    splits = resolve_splits(data, split=split, seed=int(common.get("seed") or 0), limit=limit)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    splits.save(Path(out_dir) / SPLIT_FILE)
    for job in jobs:
        job.kwargs["data"] = splits  # every member trains and validates on exactly these files

    def done(results: list[MemberResult]) -> TrainedEnsemble:
        return TrainedEnsemble(results, splits=splits, recipe=recipe, out_dir=Path(out_dir))

    if workers == 1:
        results = []
        for job in jobs:
            log.info("training member %d/%d: %s", job.index + 1, len(jobs), job.name)
            results.append(_guarded(job, lambda job=job: _run(job)))
        return done(results)

    log.info("training %d members, %d at a time, %d thread(s) each", len(jobs), workers, threads)
    context = multiprocessing.get_context("spawn")
    # A fresh interpreter per member (Python 3.11+), as separate commands would give; on 3.10 a worker
    # may train several members in turn, which gives the same results since finetune() seeds everything.
    fresh: dict[str, Any] = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, **fresh) as pool:
        futures: list[Future[MemberResult]] = [pool.submit(_run, job) for job in jobs]
        try:
            return done([_guarded(job, future.result) for job, future in zip(jobs, futures, strict=True)])
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _common_recipe(common: dict[str, Any]) -> Recipe:
    """The recipe every member follows unless it overrides it: ``recipe=`` with the common overrides."""
    fields = Recipe.__dataclass_fields__
    overrides = {k: v for k, v in common.items() if k in fields and k != "name"}
    if "augment" in overrides and isinstance(overrides["augment"], bool):
        overrides["augment"] = "flip" if overrides["augment"] else "none"
    return get_recipe(common.get("recipe")).replace(**overrides)


def _guarded(job: _Job, get: Any) -> MemberResult:
    try:
        result: MemberResult = get()
    except EnsembleNetError as exc:  # keep the class (callers catch ConfigError...), name the member
        try:
            named = type(exc)(f"ensemble member {job.index} ({job.name}): {exc}")
        except Exception:  # a subclass with another constructor: keep the original
            raise exc from None
        raise named from exc
    except BrokenProcessPool as exc:
        raise TrainingError(
            f"ensemble member {job.index} ({job.name}): its worker process died ({exc}). It was killed (e.g. "
            'out of memory: lower `parallel`), or the calling script lacks the `if __name__ == "__main__":` '
            "guard that spawned processes need (they re-import the main module)"
        ) from exc
    except Exception as exc:  # re-raised with the member named
        raise TrainingError(f"ensemble member {job.index} ({job.name}) failed: {exc}") from exc
    log.info("member %s done in %.1fs: %s", job.name, result.seconds, result.path)
    return result
