"""The reference benchmark, shared by ``cats_vs_dogs.py`` and ``ants_vs_bees.py``.

Trains each member with a recipe, combines them, scores everything on the test split with
:func:`ensemblenet.scoring.build_report` (what ``Ensemble.report`` computes, here fed the member
probabilities that the figures also need, so the test images go through each member once) and
writes ``report.md``, ``report.json`` and PNG figures to one folder.

Recipes (``RECIPES``):

* ``seed`` -- the reference notebook: BatchNorm-only fine-tuning (every BatchNorm layer trains,
  in train mode), ``Linear(n, 512) -> Linear(512, C)`` head, Adam 1e-3, 2 epochs, batch 32,
  images squashed to the backbone's size, soft vote (``mean``).
* ``best`` -- ensemblenet's recommendation on a CPU: ``head_only`` (the backbone stays frozen
  *in eval mode*), so its features are a pure function of the image and are computed **once**
  (:func:`ensemblenet.training.fit_with_feature_cache`); the head then trains for 10 epochs with a
  cosine schedule for about the price of one seed-recipe epoch's forward passes and none of its
  backward passes; the combination is **chosen on the validation split** among ``mean``,
  ``weighted`` and ``calibrated`` by 5-fold cross-fitted log-loss
  (:func:`ensemblenet.strategies.choose_strategy`).

Every report has rows for ``mean``, ``weighted`` (member weights fitted on validation log-loss)
and ``calibrated`` (member and ensemble temperatures around ``weighted``), all fitted on the
validation split only; the recipe's combination is the primary row. Why choose by cross-fitting
and not by the fit itself: a fitted combination always looks best on the rows it was fitted on.
Cross-fitting removes that bias; it cannot make a small validation split representative. Measured
(docs' benchmarks page): on Dogs vs Cats (3,690 validation images) it picks ``calibrated``, the
best row on the test split too; on ants vs bees (49 validation images, all classified correctly
by EfficientNet-Lite0) it picks ``weighted``, which there means Lite0 alone: the same test
accuracy as Lite0 but a worse test log-loss than the plain mean (0.238 against 0.209).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import ensemblenet
from ensemblenet import Ensemble, ModelCheckpoint, Samples, TrainConfig, Trainer, create_model, scoring
from ensemblenet.ensemble import readable_rows
from ensemblenet.models import split_backbone
from ensemblenet.scoring import build_report, confusion_matrix
from ensemblenet.strategies import CalibratedStrategy, choose_strategy, fit_candidate
from ensemblenet.training import FeatureCache, compute_features, fit_with_feature_cache


@dataclass(frozen=True)
class Recipe:
    name: str
    freeze: str
    epochs: int
    batch_size: int
    schedule: str
    feature_cache: bool
    combine: str  # the primary row: "mean", "weighted", "calibrated", or "auto" (chosen on validation)
    head: str = "mlp"
    lr: float = 1e-3
    why: str = ""


RECIPES = {
    "seed": Recipe(
        "seed", "bn_only", epochs=2, batch_size=32, schedule="constant", feature_cache=False, combine="mean",
        why="the reference notebook, unchanged",
    ),
    "best": Recipe(
        "best", "head_only", epochs=10, batch_size=64, schedule="cosine", feature_cache=True,
        combine="auto",
        why=(
            "head_only keeps the backbone frozen in eval mode, so its features are computed once and "
            "every epoch only trains the head (more epochs for almost nothing); a cosine schedule settles "
            "the head; the combination (mean, weighted or calibrated) is chosen by 5-fold cross-fitted "
            "log-loss on the validation split, so a fitted combination has to win on validation images "
            "it was not fitted on (a small validation split can still mislead the choice)"
        ),
    ),
}  # fmt: skip

CHUNK = 256  # images per feature-cache chunk: one progress-bar step


def cached_features(
    model: Any, samples: Samples, what: str, progress: bool, device: Any, dtype: torch.dtype = torch.float16
) -> FeatureCache:
    """compute_features in chunks, so a long one-off pass shows a progress bar."""
    parts = []
    starts = range(0, len(samples), CHUNK)
    for start in tqdm(starts, desc=f"features {what}", unit="chunk", disable=not progress):
        chunk = samples.subset(range(start, min(start + CHUNK, len(samples))))
        part = compute_features(model, chunk, None, device=device, dtype=dtype)
        part.indices = part.indices + start
        part.skipped = [i + start for i in part.skipped]
        parts.append(part)
    return FeatureCache(
        features=torch.cat([p.features for p in parts], dim=1),
        labels=torch.cat([p.labels for p in parts]),
        indices=torch.cat([p.indices for p in parts]),
        skipped=[i for p in parts for i in p.skipped],
    )


def probs_from_cache(model: Any, cache: FeatureCache, n: int) -> torch.Tensor:
    """Class probabilities ``(n, C)`` from cached head_only features (NaN rows for skipped images)."""
    _, rest = split_backbone(model.backbone, None)
    model.eval()
    out = torch.full((n, len(model.classes)), math.nan)
    with torch.inference_mode():
        features = cache.features[0].float().to(next(model.parameters()).device)
        logits = model.head(rest(features)).cpu()
    out[cache.indices] = torch.softmax(logits.float(), dim=1)
    return out


def train_member(
    backbone: str, weights: str, recipe: Recipe, train: Samples, val: Samples, test: Samples, seed: int,
    out: Path, progress: bool, device: str, workers: int,
) -> tuple[Any, Any, torch.Tensor | None, torch.Tensor | None, dict[str, Any]]:  # fmt: skip
    started = time.perf_counter()
    torch.manual_seed(seed)  # the new head's initial weights
    model = create_model(backbone, train.classes, head=recipe.head, weights=weights or "DEFAULT")
    config = TrainConfig(
        epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size, schedule=recipe.schedule,
        seed=seed, progress=progress, device=device, num_workers=workers,
    )  # fmt: skip
    path = out / (backbone.replace(":", "_") + ".pt")
    trainer = Trainer(config, freeze=recipe.freeze, callbacks=[ModelCheckpoint(path, monitor="val_loss")])
    val_probs = test_probs = None
    if recipe.feature_cache:
        train_cache = cached_features(model, train, f"{backbone} train", progress, trainer.device)
        val_cache = cached_features(model, val, f"{backbone} val", progress, trainer.device)
        feature_seconds = time.perf_counter() - started
        history = fit_with_feature_cache(trainer, model, train_cache, val_cache)
        val_probs = probs_from_cache(model, val_cache, len(val))  # best weights already restored
        # The test images go through the same frozen backbone once, kept in float32 so the
        # probabilities are the model's own up to float rounding (the backbone is in eval mode).
        test_cache = cached_features(model, test, f"{backbone} test", progress, trainer.device, torch.float32)
        test_probs = probs_from_cache(model, test_cache, len(test))
    else:
        feature_seconds = 0.0
        history = trainer.fit(model, train, val)
    seconds = time.perf_counter() - started
    row = {
        "backbone": backbone,
        "weights": weights or "DEFAULT",
        "weights_source": model.config.weights_source,  # which file "DEFAULT" really was here
        "train_seconds": round(seconds, 3),
        "feature_seconds": round(feature_seconds, 3),
        "history": history.to_dict()["records"],
        "checkpoint": str(path),
    }
    return model.eval(), history, val_probs, test_probs, row


def hardware() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    info: dict[str, Any] = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions() -> dict[str, str]:
    found = {
        "python": platform.python_version(),
        "ensemblenet": ensemblenet.__version__,
        "torch": torch.__version__,  # with its build tag (+cpu, +cu130...)
    }
    for package in ("torchvision", "timm", "numpy", "pillow", "matplotlib"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def run_from_args(
    args: argparse.Namespace, *, title: str, data_note: str, train: Samples, val: Samples, test: Samples
) -> dict[str, Any]:
    """:func:`run` with the recipe and settings of an example's command line (shared options)."""
    recipe = RECIPES[args.recipe]
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size}
    recipe = replace(recipe, **{k: v for k, v in overrides.items() if v})
    return run(
        title=f"{title}, recipe {recipe.name}",
        data_note=data_note,
        train=train,
        val=val,
        test=test,
        members=args.members.split(","),
        recipe=recipe,
        seed=args.seed,
        out=args.out,
        progress=not args.no_progress,
        device=args.device,
        workers=args.workers,
        resamples=args.resamples,
    )


def run(
    *, title: str, data_note: str, train: Samples, val: Samples, test: Samples, members: list[str],
    recipe: Recipe, seed: int, out: Path, progress: bool = True, device: str = "auto", workers: int = 0,
    resamples: int = 10_000,
) -> dict[str, Any]:  # fmt: skip
    """Train, combine, score, draw; returns the report as a dict (also written to ``out``)."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    models, histories, val_member_probs, test_member_probs, rows = [], {}, [], [], []
    for spec in members:
        backbone, _, weights = spec.partition("=")
        model, history, val_probs, test_probs, row = train_member(
            backbone, weights, recipe, train, val, test, seed, out, progress, device, workers
        )
        models.append(model)
        histories[backbone.split(":")[-1]] = history
        val_member_probs.append(val_probs)
        test_member_probs.append(test_probs)
        rows.append(row)
        print(f"trained {backbone} in {row['train_seconds']:.0f}s")

    ensemble = Ensemble(models, strategy="mean")
    names = [b.split(":")[-1] for b in ensemble.member_names]
    where = None if device == "auto" else device  # None: CUDA when available
    if any(p is None for p in val_member_probs):
        val_probs = ensemble.member_probas(val, progress=progress, device=where).double()
    else:
        val_probs = torch.stack([p for p in val_member_probs if p is not None]).double()
    if any(p is None for p in test_member_probs):
        test_probs = ensemble.member_probas(test, progress=progress, device=where).double()
    else:
        test_probs = torch.stack([p for p in test_member_probs if p is not None]).double()
    val_labels, test_labels = torch.as_tensor(val.labels), torch.as_tensor(test.labels)
    val_ok, test_ok = readable_rows(val_probs), readable_rows(test_probs)

    # The combinations reported, each fitted on the validation split only (the test split is
    # touched once, below); "auto" picks one of them by cross-fitting on the same rows.
    candidates = {"mean": "mean", "weighted": "weighted", "calibrated": CalibratedStrategy("weighted")}
    fit_probs, fit_labels = val_probs[:, val_ok], val_labels[val_ok]
    strategies = {k: fit_candidate(c, fit_probs, fit_labels) for k, c in candidates.items()}
    choice = None
    combine = recipe.combine
    if combine == "auto":
        choice = choose_strategy(fit_probs, fit_labels, candidates, seed=seed)
        combine = choice.name
        print(choice)
    primary = f"ensemble ({combine})"
    order = [combine, *(k for k in strategies if k != combine)]
    probs, labels = test_probs[:, test_ok], test_labels[test_ok]
    combined = {f"ensemble ({k})": strategies[k].combine(probs).double() for k in order}
    report = build_report(
        probs,
        labels,
        combined,
        member_names=names,
        classes=ensemble.classes,
        n_resamples=resamples,
        seed=seed,
        n_skipped=int((~test_ok).sum()),
    )
    print(report)

    all_probs = {**dict(zip(names, probs, strict=True)), **combined}
    matrices = {
        name: confusion_matrix(p.argmax(dim=1), labels, len(ensemble.classes))
        for name, p in all_probs.items()
    }
    test_paths = [p for p, ok in zip(test.paths, test_ok.tolist(), strict=True) if ok]
    figs = {
        "learning_curves": scoring.plot_learning_curves(histories, out / "learning_curves.png"),
        "confusion_matrix": scoring.plot_confusion_matrices(
            {k: matrices[k] for k in [*names, primary]}, ensemble.classes, out / "confusion_matrix.png"
        ),
        "reliability": scoring.plot_reliability(all_probs, labels, out / "reliability.png"),
        "confident_errors": scoring.plot_confident_errors(
            test_paths, combined[primary], labels, ensemble.classes, out / "confident_errors.png",
            captions=[Path(p).name for p in test_paths], load=ensemblenet.load_image,
        ),
    }  # fmt: skip
    seconds = time.perf_counter() - started
    payload = {
        "title": title,
        "data": data_note,
        "split": {"train": len(train), "val": len(val), "test": len(test)},
        "recipe": asdict(recipe),
        "members": rows,
        "report": report.to_dict(),
        "confusion_matrices": {k: v.tolist() for k, v in matrices.items()},
        "fitted": {k: repr(strategies[k]) for k in ("weighted", "calibrated")},
        "primary": primary,
        "choice": None
        if choice is None
        else {
            "chosen": choice.name,
            "metric": choice.metric,
            "folds": choice.folds,
            "out_of_fold_scores": choice.scores,
        },
        "figures": {k: v.name for k, v in figs.items()},
        "seconds": round(seconds, 1),
        "seed": seed,
        "hardware": hardware(),
        "versions": versions(),
        "command": " ".join(["python", *sys.argv]),
    }
    (out / "report.json").write_text(json.dumps(payload, indent=2))
    (out / "report.md").write_text(markdown(payload, report))
    print(f"report: {out / 'report.md'}  ({seconds:.0f}s)")
    return payload


def describe(hw: dict[str, Any]) -> str:
    text = f"{hw['cpu']}, {hw['cpu_count']} CPUs, {hw['torch_threads']} torch threads"
    return text + (f", GPU {hw['gpu']}" if "gpu" in hw else ", no GPU")


def markdown(p: dict[str, Any], report: Any) -> str:
    r = p["recipe"]
    split = p["split"]
    lines = [
        f"# {p['title']}",
        "",
        f"- data: {p['data']}",
        f"- split: train {split['train']} / val {split['val']} / test {split['test']}",
        f"- recipe `{r['name']}`: freeze `{r['freeze']}`, head `{r['head']}`, Adam {r['lr']:g}, "
        f"{r['epochs']} epochs, {r['schedule']} schedule, batch {r['batch_size']}, "
        f"feature cache {r['feature_cache']}, "
        f"combination `{r['combine']}` ({r['why']})",
        f"- seed {p['seed']}; total wall time {p['seconds']:.0f} s; hardware: {describe(p['hardware'])}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in p['versions'].items())}",
        f"- command: `{p['command']}`",
        "",
        "## Test results",
        "",
        "| model | accuracy | 95% CI | log-loss | ECE | Brier |",
        "|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        ci = f"[{row.accuracy_ci[0]:.4f}, {row.accuracy_ci[1]:.4f}]"
        scores = f"{row.log_loss:.4f} | {row.ece:.4f} | {row.brier:.4f}"
        lines.append(f"| {row.name} | {row.accuracy:.4f} | {ci} | {scores} |")
    choice = p.get("choice")
    if choice:
        scores = ", ".join(f"`{k}` {v:.4f}" for k, v in choice["out_of_fold_scores"].items())
        lines += [
            "",
            f"The recipe's combination, `{choice['chosen']}` (first row), was chosen on the validation "
            f"split by {choice['folds']}-fold cross-fitted {choice['metric']} ({scores}); the test "
            "split played no part.",
        ]
    lines += [
        "",
        f"Gain over the best member (`{report.best_member}`), paired on the same {report.n} test images "
        "(b: images only the ensemble gets right; c: only the best member):",
        "",
        "| ensemble | accuracy gain | 95% CI | b | c | McNemar exact p |",
        "|---|---|---|---|---|---|",
    ]
    for c in report.comparisons:
        ci = f"[{c.diff_ci[0]:+.4f}, {c.diff_ci[1]:+.4f}]"
        lines.append(f"| {c.ensemble} | {c.accuracy_diff:+.4f} | {ci} | {c.b} | {c.c} | {c.p_value:.4g} |")
    lines += [
        "",
        f"Diversity: mean pairwise disagreement {report.mean_disagreement:.4f}; oracle accuracy "
        f"{report.oracle_accuracy:.4f}. ECE: top-label, {report.n_bins} bins.",
        "",
        "## Members",
        "",
        "| member | train wall time (s) | of which feature cache (s) | best val loss | epochs |",
        "|---|---|---|---|---|",
    ]
    for m in p["members"]:
        best = min((h["val_loss"] for h in m["history"]), default=math.nan)
        lines.append(
            f"| {m['backbone']} | {m['train_seconds']:.0f} | {m['feature_seconds']:.0f} | {best:.4f} | "
            f"{len(m['history'])} |"
        )
    lines.append("")
    for m in p["members"]:
        source = m.get("weights_source") or "random init"
        lines.append(f"- `{m['backbone']}` started from weights `{m['weights']}`: {source}")
    lines += ["", "## Confusion matrices (rows: true, columns: predicted)", ""]
    classes = report.classes
    for name, matrix in p["confusion_matrices"].items():
        cells = "; ".join(
            f"{classes[t]}→{classes[q]} {matrix[t][q]}"
            for t in range(len(classes))
            for q in range(len(classes))
        )
        lines.append(f"- {name}: {cells}")
    lines += ["", "## Figures", ""]
    for key, file in p["figures"].items():
        lines.append(f"![{key}]({file})")
        lines.append("")
    return "\n".join(lines)
