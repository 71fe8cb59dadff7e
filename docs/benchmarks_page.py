"""Write ``docs/benchmarks.rst`` from the measured ``report.json`` files, so no number is typed by hand.

    python docs/benchmarks_page.py [RUNS]      # RUNS defaults to runs/

``docs/benchmarks.rst.in`` holds the prose; each ``{key}`` in it is filled from one run folder
``RUNS/NAME/report.json`` (the example scripts write them):

* ``{NAME}``: the test table, the gain table and a line with the split, wall times and what was
  fitted (``NAME`` with ``-`` written as ``_``, e.g. ``{cats_vs_dogs_full_best}``);
* ``{NAME_cmd}``: the command that wrote the report; ``{NAME_hw}``: CPU, cores, torch;
* ``{NAME_figs}``: its figures, copied (photo grids shrunk) to ``docs/_static/benchmarks/``;
* ``{NAME_targets}``: the issue's targets checked against that run.

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
    return "\n".join([*out, "", text, ""])


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


def values(runs: Path, wanted: set[str], static: Path = STATIC) -> dict[str, str]:
    """The ``wanted`` fields that the reports under ``runs`` can fill (only those figures are copied)."""
    found: dict[str, str] = {}
    for folder in sorted(p for p in runs.iterdir() if (p / "report.json").is_file()):
        key = folder.name.replace("-", "_")
        if not wanted & {key, f"{key}_cmd", f"{key}_hw", f"{key}_figs", f"{key}_targets"}:
            continue
        d = json.loads((folder / "report.json").read_text())
        hw, v = d["hardware"], d["versions"]
        found[key] = tables(d)
        found[f"{key}_cmd"] = d["command"]
        found[f"{key}_hw"] = f"{hw['cpu']}, {hw['cpu_count']} cores, torch {v['torch']}"
        if f"{key}_figs" in wanted:
            found[f"{key}_figs"] = figures(runs, folder.name, static)
        found[f"{key}_targets"] = targets(d)
    return found


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return f"*(not measured on this machine: no report for* ``{key}`` *)*"


def render(template: str, runs: Path, static: Path = STATIC) -> str:
    """``template`` with its ``{key}`` fields filled from the reports under ``runs``."""
    wanted = {field for _, field, _, _ in string.Formatter().parse(template) if field}
    return template.format_map(_Missing(values(runs, wanted, static)))


def main(argv: list[str]) -> int:
    runs = Path(argv[0]) if argv else DOCS.parent / "runs"
    page = render((DOCS / "benchmarks.rst.in").read_text(), runs)
    (DOCS / "benchmarks.rst").write_text(page)
    print(f"wrote {DOCS / 'benchmarks.rst'} from {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
