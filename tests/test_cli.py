"""The command line, in process: help, one-line errors with exit codes, JSON output, predict streaming.

The real console script in a subprocess (and real kills) is in ``test_cli_subprocess.py``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from ensemblenet import Ensemble
from ensemblenet.cli import build_parser, main
from ensemblenet.data import load_split
from ensemblenet.models import create_model, load_checkpoint, save_model
from ensemblenet.spec import InputSpec

from .conftest import read_raw, write_class_folder, write_raw

BACKBONE = "torchvision:mobilenet_v3_small"  # small, and loadable in any process (no test-only source)
SMALL = InputSpec(size=(32, 32))
COMMANDS = ("train", "train-ensemble", "evaluate", "predict", "ensemble", "report", "export", "distill")


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_class_folder(tmp_path_factory.mktemp("cli") / "images", per_class=6, size=(32, 32))


def model_file(path: Path, classes: tuple[str, ...] = ("cats", "dogs"), seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_model(create_model(BACKBONE, classes, head="linear", weights=None, input_spec=SMALL), path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_file(tmp_path_factory.mktemp("model") / "m.pt")


# --------------------------------------------------------------------------- help and usage


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example_or_description(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert f"usage: ensemblenet {command}" in text
    for option in ("--json", "--quiet", "--verbose"):
        assert option in text


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(command in text for command in COMMANDS)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "required: COMMAND"),
        (["trian"], "invalid choice: 'trian'"),
        (["train", "data"], "--backbone"),
        (["train", "d", "--backbone", "x", "--epochs", "0"], "positive integer"),
        (["train", "d", "--backbone", "x", "-q", "-v"], "not allowed with"),
        (["evaluate", "folder"], "-m/--model"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert_one_line_error(2, err, needle, "--help")


# --------------------------------------------------------------------------- configuration errors


def test_unknown_names_suggest_close_matches(folder: Path) -> None:
    base = ["train", folder, "--weights", "none", "--size", "32", "--epochs", "1", "-q"]
    cases = [
        (["--backbone", "torchvision:mobilenet_v3_smal"], "'mobilenet_v3_small'"),
        (["--backbone", BACKBONE, "--head", "mpl"], "'mlp'"),
        (["--backbone", BACKBONE, "--freeze", "bn_onyl"], "'bn_only'"),
    ]
    for extra, suggestion in cases:
        code, _, err = run(*base, *extra)
        assert_one_line_error(code, err, "error:", "Did you mean", suggestion)


def test_unknown_strategy_suggests_close_match(folder: Path, model: Path) -> None:
    code, _, err = run("evaluate", "-m", model, folder, "--strategy", "meen", "-q")
    assert_one_line_error(code, err, "'mean'")


def test_train_and_val_folders_with_different_classes(tmp_path: Path, folder: Path) -> None:
    val = tmp_path / "val"
    write_class_folder(val, per_class=2)
    (val / "dogs").rename(val / "birds")
    code, _, err = run("train", folder, "--val", val, "--backbone", BACKBONE, "--weights", "none", "-q")
    line = assert_one_line_error(code, err, "ensemblenet train: error:", "only in train: ['dogs']")
    assert "only in val: ['birds']" in line and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("layout", ["empty-class", "one-class"])
def test_empty_class_folder_and_single_class(tmp_path: Path, layout: str) -> None:
    root = write_class_folder(tmp_path / "data", per_class=2)
    if layout == "empty-class":
        for f in (root / "dogs").iterdir():
            f.unlink()
        needle = "has no images"
    else:
        (root / "dogs").rename(tmp_path / "elsewhere")
        needle = "at least 2"
    code, _, err = run("train", root, "--backbone", BACKBONE, "--weights", "none", "-q")
    assert_one_line_error(code, err, needle)


def test_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    code, _, err = run("train", tmp_path / "nope", "--backbone", BACKBONE, "-q")
    assert_one_line_error(code, err, "does not exist")


def test_weights_file_for_the_wrong_architecture(tmp_path: Path, folder: Path) -> None:
    wrong = tmp_path / "resnet_bits.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, wrong)
    code, _, err = run("train", folder, "--backbone", BACKBONE, "--weights", wrong, "--size", "32", "-q")
    assert_one_line_error(code, err, str(wrong), "missing", "unexpected", "'conv1.weight'")


def test_members_with_different_classes(tmp_path: Path, folder: Path, model: Path) -> None:
    other = model_file(tmp_path / "other.pt", classes=("cats", "foxes"))
    code, _, err = run("evaluate", "-m", model, "-m", other, folder, "-q")
    assert_one_line_error(code, err, "member 1", "['cats', 'foxes']", str(other))


# --------------------------------------------------------------------------- hostile and broken files


class Exploit:
    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("echo pwned",))


def test_hostile_and_broken_model_files_are_refused(tmp_path: Path, folder: Path, model: Path) -> None:
    evil = tmp_path / "evil.pt"
    with evil.open("wb") as f:
        pickle.dump({"format": "ensemblenet.model", "x": Exploit()}, f)
    evil_ensemble = tmp_path / "evil_ensemble.pt"
    torch.save({"format": "ensemblenet.ensemble", "x": Exploit()}, evil_ensemble)
    metadata, tensors = read_raw(model)
    last = sorted(k for k in tensors if k.startswith("state_dict/head."))[-1]
    tampered = write_raw(tmp_path / "tampered.pt", metadata, {**tensors, last: tensors[last] + 1.0})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(model.read_bytes()[:2000])
    for path, needle in (
        (evil, "refused"),
        (evil_ensemble, "refused"),
        (tampered, "corrupted or was modified"),
        (truncated, "cannot read"),
        (tmp_path / "absent.pt", "does not exist"),
    ):
        code, out, err = run("predict", "-m", path, folder, "-q")
        assert_one_line_error(code, err, needle, str(path))
        assert out == ""


def test_verbose_shows_the_traceback(tmp_path: Path, folder: Path) -> None:
    code, _, err = run("evaluate", "-m", tmp_path / "absent.pt", folder, "-v")
    assert (
        code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("ensemblenet evaluate:")
    )


# --------------------------------------------------------------------------- evaluate and predict


def test_evaluate_json_is_strict_and_complete(folder: Path, model: Path) -> None:
    code, out, err = run("evaluate", "-m", model, "-m", model, folder, "--json", "-q")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["n"] == 12 and doc["n_skipped"] == 0 and 0.0 <= doc["accuracy"] <= 1.0
    assert len(doc["members"]) == 2 and doc["strategy"] == "mean"


def test_predict_csv_json_and_jsonl_agree_and_mark_unreadable_files(tmp_path: Path, model: Path) -> None:
    images = write_class_folder(tmp_path / "in", per_class=3, size=(32, 32))
    (images / "cats" / "broken.jpg").write_bytes(b"not an image at all")
    outputs = {}
    for fmt in ("csv", "json", "jsonl"):
        target = tmp_path / f"p.{fmt}"
        code, out, err = run(
            "predict", "-m", model, images, "--format", fmt, "-o", target, "--batch-size", "2"
        )
        assert code == 0 and out == "" and "7 image(s), 1 unreadable" in err
        outputs[fmt] = target.read_text()
    rows = list(csv.DictReader(io.StringIO(outputs["csv"])))
    as_json = json.loads(outputs["json"])
    as_jsonl = [json.loads(line) for line in outputs["jsonl"].splitlines()]
    assert len(rows) == len(as_json) == len(as_jsonl) == 7
    for row, doc, line in zip(rows, as_json, as_jsonl, strict=True):
        assert row["path"] == doc["path"] == line["path"] and doc == line
        if row["path"].endswith("broken.jpg"):
            assert row["error"] == doc["error"] == "unreadable image" and doc["probabilities"] is None
            assert row["cats"] == row["prediction"] == ""
        else:
            probs = doc["probabilities"]
            assert abs(sum(probs.values()) - 1.0) < 1e-5 and row["prediction"] == max(probs, key=probs.get)
            assert abs(float(row["cats"]) - probs["cats"]) < 1e-5


def test_predict_json_flag_writes_json_to_stdout(folder: Path, model: Path) -> None:
    files = sorted((folder / "cats").iterdir())[:2]
    code, out, _ = run("predict", "-m", model, *files, "--json", "-q")
    assert code == 0 and [row["path"] for row in json.loads(out)] == [str(f) for f in files]


def test_predict_missing_input_is_one_line(tmp_path: Path, model: Path) -> None:
    code, _, err = run("predict", "-m", model, tmp_path / "nope.jpg", "-q")
    assert_one_line_error(code, err, "nope.jpg")


# --------------------------------------------------------------------------- ensemble


def test_ensemble_fits_weights_on_validation_folder(tmp_path: Path, folder: Path, model: Path) -> None:
    other = model_file(tmp_path / "other.pt", seed=1)
    code, out, _ = run("ensemble", model, other, "--val", folder, "--json", "-q")
    assert code == 0
    doc = json.loads(out)
    assert doc["strategy"] == "weighted" and len(doc["weights"]) == 2
    assert abs(sum(doc["weights"]) - 1.0) < 1e-6 and doc["validation"]["n"] == 12
    code, _, err = run("ensemble", model, other, "--strategy", "weighted", "-o", tmp_path / "e.pt", "-q")
    assert_one_line_error(code, err, "must be fitted", "--val")
    assert not (tmp_path / "e.pt").exists()


def test_ensemble_choose_picks_on_validation_and_saves_the_winner(
    tmp_path: Path, folder: Path, model: Path
) -> None:
    from ensemblenet import Ensemble, choose_strategy
    from ensemblenet.data import scan_folder

    other = model_file(tmp_path / "other.pt", seed=1)
    ens = tmp_path / "ens.pt"
    code, out, _ = run("ensemble", model, other, "--val", folder, "--choose", "-o", ens, "--json", "-q")
    assert code == 0
    doc = json.loads(out)
    probs = Ensemble.from_checkpoints([model, other]).member_probas(folder, progress=False).double()
    expected = choose_strategy(probs, torch.as_tensor(scan_folder(folder).labels))
    assert doc["choice"]["chosen"] == expected.name == doc["strategy"]
    assert doc["choice"]["log_loss_oof"] == pytest.approx(expected.scores)
    assert Ensemble.load(ens).predict_proba(folder, progress=False).shape == (12, 2)
    code, _, err = run("ensemble", model, other, "--choose", "--strategy", "vote", "--val", folder, "-q")
    assert_one_line_error(code, err, "--choose", "leave out --strategy")
    code, _, err = run("ensemble", model, other, "--choose", "-q")
    assert_one_line_error(code, err, "--choose", "--val FOLDER")


def test_ensemble_choose_with_tta_auto_decides_flip_on_validation_and_saves_it(
    tmp_path: Path, folder: Path, model: Path
) -> None:
    from ensemblenet import Ensemble

    other = model_file(tmp_path / "other.pt", seed=1)
    ens = tmp_path / "ens.pt"
    args = ("ensemble", model, other, "--val", folder, "--choose", "--tta", "auto", "-o", ens, "--json", "-q")
    code, out, _ = run(*args)
    assert code == 0
    doc = json.loads(out)
    library = Ensemble.from_checkpoints([model, other])
    expected = library.fit_combination(folder, "auto", tta="auto", progress=False)
    assert library.flip_choice is not None and doc["flip_tta"] == library.flip_choice.to_dict()
    assert doc["choice"]["chosen"] == expected.name == doc["strategy"]
    saved = Ensemble.load(ens)
    assert (saved.tta is not None) == library.flip_choice.flip  # the decision travels with the file
    torch.testing.assert_close(
        saved.predict_proba(folder, progress=False), library.predict_proba(folder, progress=False)
    )
    code, _, err = run("ensemble", model, other, "--val", folder, "--tta", "auto", "-q")
    assert_one_line_error(code, err, "--tta auto", "add --choose")


def test_parser_defaults_come_from_the_recipe_as_in_finetune() -> None:
    """Every training setting defaults to None (the recipe's value), exactly as finetune()'s arguments."""
    import inspect

    from ensemblenet import finetune
    from ensemblenet.cli._train import _FINETUNE_OPTIONS

    for command in (
        ["train", "data", "--backbone", "torchvision:resnet18"],
        ["train-ensemble", "d", "--backbone", "x"],
    ):
        args = build_parser().parse_args(command)
        assert args.recipe == "fast" and args.weights == "DEFAULT" and args.split is None and args.seed == 0
        defaults = inspect.signature(finetune).parameters
        for name in _FINETUNE_OPTIONS:
            assert getattr(args, name) == defaults[name].default, name


class FlushCounter(io.StringIO):
    """Records how many lines had been written at each flush."""

    def __init__(self) -> None:
        super().__init__()
        self.at_flush: list[int] = []

    def flush(self) -> None:
        self.at_flush.append(self.getvalue().count("\n"))
        super().flush()


def test_predict_streams_rows_batch_by_batch(folder: Path, model: Path) -> None:
    out, err = FlushCounter(), io.StringIO()
    code = main(
        ["predict", "-m", str(model), str(folder), "--format", "jsonl", "--batch-size", "4", "-q"],
        stdout=out,
        stderr=err,
    )
    assert code == 0 and out.getvalue().count("\n") == 12
    # rows of each batch of 4 were flushed before the next batch was predicted
    assert [n for n in out.at_flush if n < 12][:3] == [4, 8]


def test_ensemble_file_round_trip_report_and_export(tmp_path: Path, folder: Path, model: Path) -> None:
    pytest.importorskip("onnx")
    other = model_file(tmp_path / "other.pt", seed=1)
    ens = tmp_path / "ens.pt"
    code, out, _ = run("ensemble", model, other, "--val", folder, "--calibrate", "-o", ens, "--json", "-q")
    assert code == 0 and ens.is_file() and json.loads(out)["strategy"] == "calibrated"

    code, out, _ = run(
        "report", "-m", ens, folder, "--n-resamples", "50", "-o", tmp_path / "r.json", "--json", "-q"
    )
    doc = json.loads(out)
    assert code == 0 and doc == json.loads((tmp_path / "r.json").read_text()) | {
        "command": "report",
        "models": [str(ens)],
    }
    code, out, _ = run("export", "-m", ens, "-o", tmp_path / "ens.onnx", "--json", "-q")
    assert (
        code == 0
        and (tmp_path / "ens.onnx").stat().st_size > 0
        and json.loads(out)["classes"] == ["cats", "dogs"]
    )

    # an ensemble file must come alone, and a modified one is refused like a model file
    code, _, err = run("evaluate", "-m", ens, "-m", model, folder, "-q")
    assert_one_line_error(code, err, "is an ensemble file")
    metadata, tensors = read_raw(ens)
    key = sorted(k for k in tensors if k.startswith("members/0/state_dict/head."))[-1]
    write_raw(tmp_path / "tampered.pt", metadata, {**tensors, key: tensors[key] + 1})
    code, _, err = run("predict", "-m", tmp_path / "tampered.pt", folder, "-q")
    assert_one_line_error(code, err, "corrupted or was modified")


def test_train_lists_unreadable_files_and_writes_model_and_state(tmp_path: Path) -> None:
    root = write_class_folder(tmp_path / "data", per_class=6, size=(32, 32))
    (root / "dogs" / "fake.jpg").write_text("a text file with an image extension")
    (root / "cats" / "empty.png").write_bytes(b"")
    out = tmp_path / "m.pt"
    args = ["train", root, "--backbone", BACKBONE, "--weights", "none", "--size", "32", "--epochs", "2"]
    code, stdout, stderr = run(*args, "--batch-size", "4", "--head", "linear", "-o", out, "--json", "-q")
    assert code == 0 and stderr == ""
    doc = json.loads(stdout)
    assert sorted(Path(s["path"]).name for s in doc["skipped_files"]) == ["empty.png", "fake.jpg"]
    assert all(s["reason"] for s in doc["skipped_files"])
    assert [r["epoch"] for r in doc["history"]] == [1, 2] and doc["classes"] == ["cats", "dogs"]
    assert load_checkpoint(out)["config"]["spec"]["size"] == [32, 32]
    assert load_checkpoint(tmp_path / "m.state.pt")["train_state"]["epoch"] == 2

    code, stdout, stderr = run(*args, "--batch-size", "4", "--head", "linear", "-o", out)
    assert_one_line_error(code, stderr, f"--out {out} already exists", "--overwrite")  # nothing is lost
    overwrite = ["--overwrite", "-o", out]
    code, stdout, stderr = run(*args, "--batch-size", "4", "--head", "linear", *overwrite)  # human output
    assert code == 0 and "skipped 2 unreadable file(s) at scan time" in stderr and str(out) in stdout


class ClosedPipe(io.StringIO):
    """A stdout whose reader went away (``ensemblenet predict ... | head``)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_predict_into_a_closed_pipe_is_not_an_error(folder: Path, model: Path) -> None:
    err = io.StringIO()
    assert main(["predict", "-m", str(model), str(folder), "-q"], stdout=ClosedPipe(), stderr=err) == 0
    assert err.getvalue() == ""


# --------------------------------------------------------------------------- one split, reports, recipes


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """``train-ensemble`` with a separate test folder: (run folder, its training folder, stderr)."""
    root = tmp_path_factory.mktemp("run")
    train = write_class_folder(root / "train", per_class=10, size=(32, 32), seed=1)
    test = write_class_folder(root / "test", per_class=4, size=(32, 32), seed=2)
    argv = ["train-ensemble", train, "--test", test, "--backbone", BACKBONE, "--backbone", BACKBONE]
    argv += [
        "--weights",
        "none",
        "--size",
        "32",
        "--epochs",
        "2",
        "--head",
        "linear",
        "--out-dir",
        root / "run",
    ]
    code, _, err = run(*argv)
    assert code == 0, err
    return root / "run", train, err


def test_train_ensemble_shows_each_member_saves_the_split_and_the_combined_ensemble(
    trained_run: tuple[Path, Path, str],
) -> None:
    run_dir, _, err = trained_run
    for name in ("split.json", "ensemble.pt", "torchvision_mobilenet_v3_small.pt"):
        assert (run_dir / name).is_file(), name
    assert "[torchvision_mobilenet_v3_small] epoch  train_loss" in err  # the epoch table names the member
    assert "[torchvision_mobilenet_v3_small-2]     2  " in err
    assert "recipe 'fast'" in err and "report on the test split: ensemblenet report -m" in err


def test_report_on_a_saved_split_writes_a_folder_with_figures(
    tmp_path: Path, trained_run: tuple[Path, Path, str]
) -> None:
    pytest.importorskip("matplotlib")
    run_dir, _, _ = trained_run
    out = tmp_path / "report"
    code, stdout, err = run("report", "-m", run_dir / "ensemble.pt", "--split", "test", run_dir, "--out", out,
                            "--n-resamples", "50", "-q")  # fmt: skip
    assert code == 0, err
    assert {
        "report.md",
        "report.json",
        "confusion_matrix.png",
        "reliability.png",
        "confident_errors.png",
        "learning_curves.png",  # from the metrics.csv files training wrote beside the members
    } <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "report.json").read_text())
    assert saved["report"]["n"] == 8 and saved["primary"].startswith("ensemble (")
    assert "per class:" in stdout and "## Per class" in (out / "report.md").read_text()


def test_evaluate_refuses_the_training_images_and_accepts_the_held_out_split(
    trained_run: tuple[Path, Path, str],
) -> None:
    run_dir, train, _ = trained_run
    model = run_dir / "torchvision_mobilenet_v3_small.pt"
    code, _, err = run("evaluate", "-m", model, train, "-q")
    assert_one_line_error(
        code, err, "images in", "are training images of these models", "--split test RUN_DIR"
    )
    code, _, err = run("evaluate", "-m", model, "--split", "train", run_dir, "-q")
    assert_one_line_error(code, err, "own training images")
    code, out, err = run("evaluate", "-m", model, "--split", "test", run_dir, "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["n"] == 8
    code, out, err = run(
        "ensemble", model, model, "--split", "val", run_dir, "--strategy", "weighted", "-q", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["validation"]["n"] == len(load_split(run_dir).part("val"))
    code, _, err = run("evaluate", "-m", model, "-q")
    assert_one_line_error(code, err, "no images to evaluate on")


def test_unknown_recipe_is_one_line_with_the_valid_names(folder: Path) -> None:
    code, _, err = run("train", folder, "--backbone", BACKBONE, "--recipe", "fsat", "-q")
    assert_one_line_error(code, err, "unknown recipe: 'fsat'", "Did you mean 'fast'?", "full", "reference")


def test_train_ensemble_refuses_to_replace_a_run_unless_told_and_takes_a_combination(
    tmp_path: Path, trained_run: tuple[Path, Path, str]
) -> None:
    run_dir, train, _ = trained_run
    again = shutil.copytree(run_dir, tmp_path / "run")
    argv = ["train-ensemble", train, "--backbone", BACKBONE, "--weights", "none", "--size", "32",
            "--epochs", "1", "--head", "linear", "--out-dir", again, "-q", "--json"]  # fmt: skip
    code, _, err = run(*argv)
    assert_one_line_error(code, err, "already exists", "--overwrite")
    code, out, err = run(*argv, "--overwrite", "--combine", "mean")
    assert code == 0, err
    assert json.loads(out)["choice"]["chosen"] == "mean"
    assert Ensemble.load(again / "ensemble.pt").strategy.__class__.__name__ == "MeanStrategy"
