"""The real console script in subprocesses: end to end, and killed runs that resume exactly.

A killed (SIGKILL) or interrupted (SIGINT, i.e. Ctrl-C) ``ensemblenet train`` resumes with ``--resume``
from the state file written after its last completed epoch, redoes the interrupted epoch, and ends
with weights bit-identical to an uninterrupted run with the same seed (CPU, one thread).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ensemblenet.models import load_checkpoint

from .conftest import REPO, write_class_folder

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and console scripts")

EPOCHS = 8  # enough that a kill right after epoch 1 lands well before the end
# Generous: on a 2-core machine shared with other jobs (load 9 seen in CI) starting Python, importing
# torch and reaching the end of epoch 1 took more than 120 s, so the signal was never sent.
TIMEOUT = 600


def ensemblenet() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m ensemblenet``."""
    script = Path(sys.executable).with_name("ensemblenet")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ensemblenet"]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # One thread: bit-identical arithmetic between runs, and no fight over the CPU with other tests.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def cli(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*ensemblenet(), *map(str, args)],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=TIMEOUT,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def train_args(data: Path, out: Path) -> list[str]:
    return [
        "train",
        str(data),
        "--backbone",
        "torchvision:mobilenet_v3_small",  # has dropout: resume must restore the RNG stream too
        "--weights",
        "none",
        "--size",
        "32",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "4",
        "--augment",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--out",
        str(out),
        "-q",
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_class_folder(tmp_path_factory.mktemp("cli_e2e") / "data", per_class=16, size=(32, 32))


@pytest.fixture(scope="module")
def reference(data: Path) -> Path:
    """An uninterrupted run: the model file (the state file sits next to it)."""
    out = data.parent / "straight" / "m.pt"
    done = cli(*train_args(data, out), "--json")
    doc = json.loads(done.stdout)
    assert [r["epoch"] for r in doc["history"]] == list(range(1, EPOCHS + 1))
    assert Path(doc["state"]) == out.with_name("m.state.pt") and done.stderr == ""
    return out


def same_weights(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def start_and_stop_after_first_epoch(data: Path, out: Path, sig: signal.Signals) -> tuple[int, str]:
    """Start training; send ``sig`` as soon as the state after epoch 1 replaces the initial one.

    Returns the exit code and stderr.
    """
    state = out.with_name(out.stem + ".state.pt")
    with subprocess.Popen(
        [*ensemblenet(), *train_args(data, out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
        # A test run started in the background ('pytest ... &' in a script) inherits SIGINT ignored,
        # and so would the child: give it the default disposition, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as proc:
        deadline = time.monotonic() + TIMEOUT
        first: tuple[int, int] | None = None  # (inode, mtime) of the state written before epoch 1
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                stat = state.stat()
            except FileNotFoundError:
                time.sleep(0.005)
                continue
            now = (stat.st_ino, stat.st_mtime_ns)  # each atomic save renames a new file over it
            if first is None:
                first = now
            elif now != first:
                proc.send_signal(sig)
                break
            time.sleep(0.005)
        _, err = proc.communicate(timeout=TIMEOUT)
        return proc.returncode, err


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(data: Path, reference: Path) -> None:
    out = data.parent / "killed" / "m.pt"
    state = out.with_name("m.state.pt")
    code, _ = start_and_stop_after_first_epoch(data, out, signal.SIGKILL)
    assert code == -signal.SIGKILL, "the run ended before it could be killed"
    kept = load_checkpoint(state)["train_state"]["epoch"]  # a complete file that passes the sha256 check
    assert 1 <= kept < EPOCHS

    resumed = cli(*train_args(data, out), "--resume", state, "--json")
    doc = json.loads(resumed.stdout)
    assert [r["epoch"] for r in doc["history"]] == list(range(1, EPOCHS + 1))
    same_weights(state, reference.with_name("m.state.pt"))  # last epoch's weights
    same_weights(out, reference)  # the best model by validation loss


def test_ctrl_c_saves_state_exits_130_and_resumes(data: Path, reference: Path) -> None:
    out = data.parent / "interrupted" / "m.pt"
    state = out.with_name("m.state.pt")
    code, err = start_and_stop_after_first_epoch(data, out, signal.SIGINT)
    assert code == 130, err
    assert len(err.strip().splitlines()) == 1, err
    assert f"--resume {state}" in err and "interrupted during epoch" in err
    kept = load_checkpoint(state)["train_state"]["epoch"]
    assert 1 <= kept < EPOCHS and f"the state after epoch {kept} is in" in err
    assert [p.name for p in state.parent.iterdir() if p.suffix == ".tmp"] == []  # nothing torn left behind

    cli(*train_args(data, out), "--resume", state)
    same_weights(state, reference.with_name("m.state.pt"))
    same_weights(out, reference)


def test_end_to_end_ensemble_predict_and_a_failure(data: Path, reference: Path, tmp_path: Path) -> None:
    ens = tmp_path / "ens.pt"
    built = json.loads(
        cli("ensemble", reference, reference, "--val", data, "--out", ens, "--json", "-q").stdout
    )
    assert built["out"] == str(ens) and ens.is_file() and len(built["weights"]) == 2

    assert built["validation"]["n"] == 32 and len(built["validation"]["members"]) == 2

    predicted = cli("predict", "-m", ens, data / "cats", "--format", "jsonl")
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert len(rows) == 16 and all(r["prediction"] in ("cats", "dogs") for r in rows)
    assert "predict" in predicted.stderr  # the progress bar and the summary go to stderr

    failed = cli("evaluate", "-m", tmp_path / "absent.pt", data, check=False)
    assert failed.returncode == 1 and failed.stdout == ""
    absent = str(tmp_path / "absent.pt")
    assert failed.stderr.strip().splitlines() == [
        f"ensemblenet evaluate: error: model file {absent!r} does not exist or is not a file"
    ]


def test_python_dash_m_runs_the_same_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ensemblenet", "--version"],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith("ensemblenet ")
