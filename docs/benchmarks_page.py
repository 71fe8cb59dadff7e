"""Write ``docs/benchmarks.rst`` from the measured ``report.json`` files, so no number is typed by hand.

    python docs/benchmarks_page.py [RUNS]                  # RUNS defaults to runs/
    python docs/benchmarks_page.py --archive RUN_DIR...    # keep these reports in docs/benchmark_reports/

``docs/benchmarks.rst.in`` holds the prose; each ``{key}`` in it is filled from one run folder
``RUNS/NAME/report.json`` (the example scripts write them), or, when ``RUNS`` has no such folder,
from ``docs/benchmark_reports/NAME.json`` (reports archived with ``--archive``, committed, so the
page can be rebuilt on a machine that did not run every benchmark):

* ``{NAME}``: the test table, the gain table and a line with the split, wall times and what was
  fitted (``NAME`` with ``-`` written as ``_``, e.g. ``{cats_vs_dogs_full_best}``);
* ``{NAME_cmd}``: the command that wrote the report; ``{NAME_hw}``: CPU, cores, torch;
* ``{NAME_figs}``: its figures, copied (photo grids shrunk) to ``docs/_static/benchmarks/``;
* ``{NAME_targets}``: the issue's targets checked against that run (the first full-folder issue's);
* ``{NAME_distill}``: the distillation table (ensemble, members, student; agreement, McNemar p,
  prediction time), when the run distilled (``--distill``);
* ``{NAME_targets15}``: the stronger-ensemble issue's targets (accuracy, significance, log-loss,
  student, time) checked against that run; the student is the one with the lowest validation
  loss among the run's own (``--distill``) and those distilled later from its ensemble;
* ``{NAME_students}``: the students distilled later from that run's ensemble
  (``benchmarks/distill_students.py --json``, archived as ``docs/benchmark_reports/students/NAME.json``),
  one row each, with the one validation chooses marked; ``{NAME_students_cmd}``: their command.

A run folder that is missing renders as "not measured" instead of failing, so the page can be
rebuilt on a machine that ran only some of the benchmarks.
"""

from __future__ import annotations

import json
import shutil
import string
import sys
from pathlib import Path
from typing import Any

from PIL import Image

DOCS = Path(__file__).resolve().parent
ARCHIVE = DOCS / "benchmark_reports"
STATIC = DOCS / "_static" / "benchmarks"
FIGURES = {
    "learning_curves": "Learning curves per member (training loss dashed, validation loss solid; validation "
    "accuracy).",
    "confusion_matrix": "Confusion matrices on the test split (members and the ensemble; counts and row "
    "shares).",
    "reliability": "Reliability diagram on the test split (15 equal-width bins, top-label confidence; "
    "histogram of confidences below).",
    "confident_errors": "The ensemble's most confidently wrong test images, with the probabilities of the "
    "true and the predicted class.",
}
MAX_FIGURE_BYTES = 290_000  # keep the repository small: photo grids are shrunk below this


def tables(d: dict[str, Any]) -> str:
    r = d["report"]
    out = [".. list-table::", "   :header-rows: 1", "   :widths: 34 26 12 12 12", ""]
    out += ["   * - model", "     - test accuracy (95% CI)", "     - log-loss", "     - ECE", "     - Brier"]
    for row in r["rows"]:
        lo, hi = row["accuracy_ci"]
        primary = " (the recipe's combination)" if row["name"] == d.get("primary") else ""
        out += [
            f"   * - {row['name']}{primary}",
            f"     - {row['accuracy']:.4f} [{lo:.4f}, {hi:.4f}]",
            f"     - {row['log_loss']:.4f}",
            f"     - {row['ece']:.4f}",
            f"     - {row['brier']:.4f}",
        ]
    out += [
        "",
        f"Gain over the best member (``{r['best_member']}``), paired on the same {r['n']} test images "
        "(b: images only the ensemble gets right, c: only the best member):",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 34 30 12 12",
        "",
        "   * - ensemble",
        "     - accuracy gain (95% CI)",
        "     - b / c",
        "     - McNemar p",
    ]
    for c in r["comparisons"]:
        lo, hi = c["diff_ci"]
        out += [
            f"   * - {c['ensemble']}",
            f"     - {c['accuracy_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]",
            f"     - {c['b']} / {c['c']}",
            f"     - {c['p_value']:.3g}",
        ]
    members = "; ".join(
        f"``{m['backbone']}`` {m['train_seconds']:.0f} s"
        + (
            f" (of which {m['feature_seconds']:.0f} s computing cached features)"
            if m["feature_seconds"]
            else ""
        )
        for m in d["members"]
    )
    s = d["split"]
    text = (
        f"Split: train {s['train']} / validation {s['val']} / test {s['test']}. "
        f"Wall time {d['seconds']:.0f} s for the whole script; training per member: {members}. "
        "Mean pairwise disagreement "
        f"{r['mean_disagreement']:.4f}, oracle accuracy {r['oracle_accuracy']:.4f}. Fitted on validation: "
        f"``{d['fitted'].get('calibrated', '')}``."
    )
    choice = d.get("choice")
    if choice and choice.get("chosen_by", "validation") == "validation":
        scores = ", ".join(f"``{k}`` {v:.4f}" for k, v in choice["out_of_fold_scores"].items())
        text += (
            f" The combination was chosen on the validation split by {choice['folds']}-fold cross-fitted "
            f"{choice['metric']} ({scores}): ``{choice['chosen']}``."
        )
    flip = d.get("flip_tta")
    if flip:
        kept = "kept" if flip["flip"] else "not kept"
        text += (
            f" Flip test-time augmentation, decided on validation: {kept} (out-of-fold {flip['metric']} "
            f"{flip['flip_score']:.4f} with it, {flip['plain']:.4f} without)."
        )
    refit = d.get("refit")
    if refit:
        text += (
            " Members refitted on train + validation, same combination: test accuracy "
            f"{refit['accuracy']:.4f}, log-loss {refit['log_loss']:.4f}."
        )
    return "\n".join([*out, "", text, ""])


def distillation(d: dict[str, Any]) -> str:
    """The distillation block of a report as a table, with agreement, McNemar p and speed."""
    dist = d.get("distillation")
    if not dist:
        return "*(this run did not distil: no* ``--distill`` *)*"
    out = [".. list-table::", "   :header-rows: 1", "   :widths: 50 15 15 20", ""]
    out += ["   * - model", "     - kind", "     - accuracy", "     - log-loss"]
    for row in dist["scores"]:
        out += [f"   * - {row['name']}", f"     - {row['kind']}", f"     - {row['accuracy']:.4f}",
                f"     - {row['log_loss']:.4f}"]  # fmt: skip
    seconds = dist["seconds"]
    timed = dist.get("timed_images") or dist["n"]
    text = (
        f"On the {dist['n']} {dist['scored_on']} images: the student agrees with the ensemble on "
        f"{dist['agreement']:.4f} of them; McNemar p (student vs ensemble) = {dist['mcnemar_p']:.3g}. "
        f"Predicting {timed} of them (decoding included, after a warm-up) took {seconds['ensemble']:.1f} s "
        f"for the ensemble and {seconds['student']:.1f} s for the student: {dist['speedup']:.2f}x."
    )
    return "\n".join([*out, "", text, ""])


def best_val_loss(dist: dict[str, Any]) -> float:
    """The validation loss of the epoch a distillation kept (infinity when none was kept)."""
    kept = [r for r in dist.get("history", []) if r.get("epoch") == dist.get("best_epoch")]
    return float(kept[0]["val_loss"]) if kept else float("inf")


def candidate_students(d: dict[str, Any], later: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """(label, distillation) of the run's own student and of every student distilled later."""
    found = [("the run's ``--distill``", d["distillation"])] if d.get("distillation") else []
    found += [(f"``{s['student']}``", s) for s in (later or {}).get("students", [])]
    return found


def chosen_student(d: dict[str, Any], later: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """The candidate student with the lowest validation loss (test scores never choose)."""
    found = candidate_students(d, later)
    return min(found, key=lambda item: best_val_loss(item[1])) if found else None


def students(d: dict[str, Any], later: dict[str, Any] | None) -> str:
    """Every student of a run's ensemble in one table, the one validation chooses marked."""
    found = candidate_students(d, later)
    if not found:
        return "*(no student was distilled from this run)*"
    chosen = chosen_student(d, later)
    out = [".. list-table::", "   :header-rows: 1", "   :widths: 40 12 12 12 12 12", ""]
    out += ["   * - student", "     - val loss (kept epoch)", "     - test accuracy", "     - test log-loss",
            "     - vs ensemble (McNemar p)", "     - speed-up"]  # fmt: skip
    for label, dist in found:
        scores = {s["kind"]: s for s in dist["scores"]}
        student, ensemble = scores["student"], scores["ensemble"]
        gap = (student["accuracy"] - ensemble["accuracy"]) * 100
        mark = " (chosen)" if chosen is not None and dist is chosen[1] else ""
        out += [f"   * - {label}{mark}", f"     - {best_val_loss(dist):.4f} ({dist['best_epoch']})",
                f"     - {student['accuracy']:.4f}", f"     - {student['log_loss']:.4f}",
                f"     - {gap:+.2f} points (p = {dist['mcnemar_p']:.3g})",
                f"     - {dist['speedup']:.2f}x"]  # fmt: skip
    return "\n".join([*out, ""])


def targets15(d: dict[str, Any], later: dict[str, Any] | None = None) -> str:
    """The stronger-ensemble issue's targets, checked against ``d`` (a run with ``--distill``) and
    the student validation chooses among its own and those in ``later``."""
    rows = {r["name"]: r for r in d["report"]["rows"]}
    primary = rows[d["primary"]]
    best = d["report"]["best_member"]
    gain = next((c for c in d["report"]["comparisons"] if c["ensemble"] == d["primary"]), None)
    chosen = chosen_student(d, later)
    dist = chosen[1] if chosen is not None else {}
    scores = {s["kind"]: s for s in dist.get("scores", [])}
    n_members = len(d["members"])

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 34 46 20",
        "",
        "   * - target",
        f"     - measured (``{d['recipe']['name']}`` recipe, {n_members} members, ``{d['primary']}``)",
        "     - verdict",
        "   * - ensemble test accuracy ≥ 99.45% (fastai ResNet34 + TTA)",
        f"     - {primary['accuracy']:.2%}",
        f"     - {verdict(primary['accuracy'] >= 0.9945)}",
    ]
    if gain is not None:
        lines += [
            "   * - gain over the best member significant (McNemar p < 0.05)",
            f"     - {gain['accuracy_diff']:+.2%} over ``{best}``, b/c {gain['b']}/{gain['c']}, "
            f"p = {gain['p_value']:.3g}",
            f"     - {verdict(gain['p_value'] < 0.05 and gain['accuracy_diff'] > 0)}",
        ]
    lines += [
        "   * - ensemble log-loss ≤ 0.025",
        f"     - {primary['log_loss']:.4f}",
        f"     - {verdict(primary['log_loss'] <= 0.025)}",
    ]
    if "student" in scores and "ensemble" in scores:
        gap = scores["ensemble"]["accuracy"] - scores["student"]["accuracy"]
        lines += [
            "   * - distilled student within 0.15 points of the ensemble",
            f"     - {chosen[0] if chosen else ''} (lowest validation loss of "
            f"{len(candidate_students(d, later))} students): {scores['student']['accuracy']:.2%} vs "
            f"{scores['ensemble']['accuracy']:.2%} ({-gap * 100 + 0.0:+.2f} points)",  # + 0.0: no "-0.00"
            f"     - {verdict(gap <= 0.0015)}",
            f"   * - student faster than the ensemble by ≥ {n_members}x (the number of members)",
            f"     - {dist['speedup']:.2f}x",
            f"     - {verdict(dist['speedup'] >= n_members)}",
        ]
    train = sum(m["train_seconds"] for m in d["members"])
    recipe_seconds = d.get("recipe_seconds")
    measured = (
        f"{recipe_seconds / 60:.0f} min from the first image to the report"
        if recipe_seconds is not None
        else f"{train / 60:.0f} min training the members (the report's own time was not recorded)"
    )
    lines += [
        "   * - the whole recipe, all members, < 60 min on 2 CPU cores",
        f"     - {measured}; {d['seconds'] / 60:.0f} min for the whole script"
        + (" (distillation included)" if dist else ""),
        f"     - {verdict((recipe_seconds if recipe_seconds is not None else train) < 3600)}",
        "",
    ]
    return "\n".join(lines)


def shrink(src: Path, dst: Path) -> None:
    """Save ``src`` (a photo grid) to ``dst`` smaller: fewer colours, then fewer pixels, until it fits."""
    with Image.open(src) as image:
        rgb = image.convert("RGB")
    for colors, scale in ((256, 0.75), (128, 0.75), (128, 0.6), (64, 0.6)):
        size = (int(rgb.width * scale), int(rgb.height * scale))
        small = rgb.resize(size, Image.Resampling.LANCZOS)
        small.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
        if dst.stat().st_size < MAX_FIGURE_BYTES:
            return


def figures(runs: Path, name: str, static: Path) -> str:
    out = []
    for key, caption in FIGURES.items():
        src = runs / name / f"{key}.png"
        if not src.exists():
            continue
        dst = static / f"{name}-{key}.png"
        static.mkdir(parents=True, exist_ok=True)
        if src.stat().st_size < MAX_FIGURE_BYTES:
            shutil.copyfile(src, dst)
        else:
            shrink(src, dst)
        out += [f".. figure:: _static/benchmarks/{dst.name}", "   :width: 100%", "", f"   {caption}", ""]
    return "\n".join(out)


def targets(d: dict[str, Any]) -> str:
    """The issue's three targets for the full Dogs vs Cats run, checked against ``d``."""
    rows = {r["name"]: r for r in d["report"]["rows"]}
    members = [r for r in d["report"]["rows"] if r["kind"] == "member"]
    primary = rows[d["primary"]]
    best_member = min(members, key=lambda m: m["log_loss"])

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    recipe = d["recipe"]["name"]
    lo, hi = primary["accuracy_ci"]
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 30 50 20",
        "",
        "   * - target",
        f"     - measured (full folder, ``{recipe}`` recipe, its combination ``{d['primary']}``)",
        "     - verdict",
        "   * - ensemble test accuracy ≥ 99.0%",
        f"     - {primary['accuracy']:.2%} (95% CI {lo:.2%} to {hi:.2%})",
        f"     - {verdict(primary['accuracy'] >= 0.99)}",
        "   * - ensemble log-loss ≤ the best member's",
        f"     - {primary['log_loss']:.4f} vs {best_member['log_loss']:.4f} ({best_member['name']})",
        f"     - {verdict(primary['log_loss'] <= best_member['log_loss'])}",
        "   * - the whole run < 2 h on 2 CPU cores",
        f"     - {d['seconds'] / 60:.0f} min wall for the whole script (both members, report and figures)",
        f"     - {verdict(d['seconds'] < 7200)}",
        "",
    ]
    return "\n".join(lines)


SUFFIXES = ("", "_cmd", "_hw", "_figs", "_targets", "_distill", "_targets15", "_students", "_students_cmd")


def reports(runs: Path, archive: Path = ARCHIVE) -> dict[str, tuple[Path | None, Path]]:
    """``{NAME: (run folder or None, report.json)}``: the runs under ``runs``, then archived ones."""
    found: dict[str, tuple[Path | None, Path]] = {}
    if archive.is_dir():
        for file in sorted(archive.glob("*.json")):
            found[file.stem] = (None, file)
    if runs.is_dir():
        for folder in sorted(p for p in runs.iterdir() if (p / "report.json").is_file()):
            found[folder.name] = (folder, folder / "report.json")
    return found


def values(runs: Path, wanted: set[str], static: Path = STATIC, archive: Path = ARCHIVE) -> dict[str, str]:
    """The ``wanted`` fields that the reports under ``runs`` (or archived) can fill (only those figures
    are copied; an archived report has none)."""
    found: dict[str, str] = {}
    for name, (folder, file) in reports(runs, archive).items():
        key = name.replace("-", "_")
        if not wanted & {key + suffix for suffix in SUFFIXES}:
            continue
        d = json.loads(file.read_text())
        hw, v = d["hardware"], d["versions"]
        found[key] = tables(d)
        found[f"{key}_cmd"] = d["command"]
        found[f"{key}_hw"] = f"{hw['cpu']}, {hw['cpu_count']} cores, torch {v['torch']}"
        if f"{key}_figs" in wanted and folder is not None:
            found[f"{key}_figs"] = figures(runs, folder.name, static)
        found[f"{key}_targets"] = targets(d)
        later_file = archive / "students" / f"{name}.json"
        later = json.loads(later_file.read_text()) if later_file.is_file() else None
        found[f"{key}_distill"] = distillation(d)
        found[f"{key}_targets15"] = targets15(d, later)
        found[f"{key}_students"] = students(d, later)
        found[f"{key}_students_cmd"] = (later or {}).get("command", "(no command recorded)")
    return found


def archive_reports(folders: list[Path], archive: Path = ARCHIVE) -> list[Path]:
    """Copy each ``FOLDER/report.json`` to ``archive/FOLDER-NAME.json`` (the page reads them later)."""
    archive.mkdir(parents=True, exist_ok=True)
    written = []
    for folder in folders:
        target = archive / f"{folder.name}.json"
        shutil.copyfile(folder / "report.json", target)
        written.append(target)
    return written


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return f"*(not measured on this machine: no report for* ``{key}`` *)*"


def render(template: str, runs: Path, static: Path = STATIC, archive: Path = ARCHIVE) -> str:
    """``template`` with its ``{key}`` fields filled from the reports under ``runs`` (or archived)."""
    wanted = {field for _, field, _, _ in string.Formatter().parse(template) if field}
    return template.format_map(_Missing(values(runs, wanted, static, archive)))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--archive"]:
        for target in archive_reports([Path(a) for a in argv[1:]]):
            print(f"archived {target}")
        return 0
    runs = Path(argv[0]) if argv else DOCS.parent / "runs"
    page = render((DOCS / "benchmarks.rst.in").read_text(), runs)
    (DOCS / "benchmarks.rst").write_text(page)
    print(f"wrote {DOCS / 'benchmarks.rst'} from {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
