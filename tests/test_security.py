"""Files you can trust: every hostile or malformed file of issue 12, built here, and what it gets.

Each case builds its file inside the test and checks the one-line error, from the library and from
the command line (stderr is exactly one line, no traceback), and that no code ran: the hostile
``hubconf.py`` and the pickled payloads write a marker file when executed, and the marker must not
exist afterwards. A re-signed file (settings edited and the digest recomputed, as anyone can) must
still pass the schema: the digest is integrity, not authenticity. Two hypothesis tests mutate a
valid file's bytes and its settings: the file loads identically, or raises CheckpointError, never
anything else. The numbered sections follow the issue's numbered list.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ensemblenet import CheckpointError, Ensemble, create_model, load_model, save_model
from ensemblenet.cli import main
from ensemblenet.data import scan_folder
from ensemblenet.ensemble import load_ensemble
from ensemblenet.models import load_checkpoint, read_document, write_document

from .conftest import REPO, read_raw, registered_tiny_source, write_class_folder, write_raw

pytestmark = pytest.mark.usefixtures("one_thread")

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX files, signals and resource limits")
BACKBONE = "torchvision:mobilenet_v3_small"  # loadable in a subprocess, small at 32 px
TIMEOUT = 120

MARKER_CODE = """
import pathlib
pathlib.Path(__file__).with_name("MARKER").write_text("hubconf.py ran")

def tiny(weights=None, **kwargs):
    import torch.nn as nn
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)
    )
"""


class WritesMarker:
    """A pickled payload that, if ever unpickled, creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pickled code ran"))


def cli(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def one_line(code: int, err: str, *needles: str) -> str:
    """Exit code 1 and exactly one line on stderr (no traceback) holding every needle."""
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def ensemblenet() -> list[str]:
    return [sys.executable, "-m", "ensemblenet"]


def run_cli(*argv: object, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ensemblenet(), *map(str, argv)],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=TIMEOUT,
        check=False,
        **kw,
    )


@pytest.fixture
def source() -> Iterator[str]:
    with registered_tiny_source("sec-tiny") as name:
        yield name


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_class_folder(tmp_path_factory.mktemp("sec") / "images", per_class=4, size=(32, 32))


@pytest.fixture
def model_file(tmp_path: Path, source: str) -> Path:
    torch.manual_seed(0)
    return save_model(create_model(f"{source}:8", ["cats", "dogs"], head="linear"), tmp_path / "m.pt")


# ------------------------------------------------------------------------- 1. no code runs on load


@pytest.fixture
def hub_repo(tmp_path: Path) -> Iterator[Path]:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "hubconf.py").write_text(MARKER_CODE)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub-cache"))
    try:
        yield repo
    finally:
        torch.hub.set_dir(old)
        sys.modules.pop("hubconf", None)  # torch.hub imports each repo's hubconf under this name


def test_a_hub_backbone_is_rebuilt_only_with_consent(
    tmp_path: Path, hub_repo: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = hub_repo / "MARKER"
    model = create_model(f"hub:{hub_repo}:tiny", ["cats", "dogs"], head="linear")  # the user's own call
    marker.unlink()
    path = save_model(model, tmp_path / "hub.pt")
    ensemble_path = Ensemble([model]).save(tmp_path / "hub-ensemble.pt")

    refusal = f"the local folder {str(hub_repo.resolve())!r} (its hubconf.py)"
    for load, file in ((load_model, path), (load_ensemble, ensemble_path), (Ensemble.load, ensemble_path)):
        with pytest.raises(CheckpointError, match="trust_code=True") as caught:
            load(file)  # type: ignore[operator]
        assert refusal in str(caught.value) and not marker.exists()
    for file in (path, ensemble_path):
        code, out, err = cli("predict", "-m", file, images, "-q")
        one_line(code, err, "refused to rebuild", "--trust-code", str(hub_repo.resolve()))
        assert out == "" and not marker.exists()

    # '../' spellings and GitHub names are refused the same way, without any network access
    monkeypatch.chdir(hub_repo)
    for backbone, origin in (
        ("hub:../repo:tiny", str(hub_repo.resolve())),
        ("hub:evil/repo:x", "'evil/repo'"),
    ):
        document = load_checkpoint(path)
        document["config"] = {**document["config"], "backbone": backbone}
        with pytest.raises(CheckpointError, match="refused to rebuild") as caught:
            load_model(write_document(document, tmp_path / "other.pt"))
        assert origin in str(caught.value) and not marker.exists()

    # consent: the same files load, and the repository's code does run (the marker proves the test)
    assert load_model(path, trust_code=True).classes == ("cats", "dogs") and marker.exists()
    marker.unlink()
    code, _, err = cli("predict", "-m", ensemble_path, images, "-q", "--trust-code")
    assert code == 0, err
    assert marker.exists()


def test_pickled_code_never_runs(tmp_path: Path, images: Path) -> None:
    marker = tmp_path / "MARKER"
    for i, save in enumerate((torch.save, lambda obj, f: f.write_bytes(__import__("pickle").dumps(obj)))):
        path = tmp_path / f"evil{i}.pt"
        save({"format": "ensemblenet.model", "x": WritesMarker(marker)}, path)  # type: ignore[operator]
        with pytest.raises(CheckpointError, match=r"refused to load .*possibly code"):
            load_model(path)
        code, _, err = cli("predict", "-m", path, images, "-q")
        one_line(code, err, "refused to load", "possibly code")
        assert not marker.exists()


# ------------------------------------------------------------------------- 2. stored settings are checked


def resigned(document: dict[str, Any], path: Path) -> Path:
    """``document`` written as a valid file: its digest recomputed, as anyone can."""
    return write_document(document, path)


def _edit(doc: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with the field at ``dotted`` replaced (``...`` deletes it)."""
    out = json.loads(json.dumps({k: v for k, v in doc.items() if k != "state_dict"}))
    out["state_dict"] = doc["state_dict"]
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


MODEL_CASES: dict[str, tuple[str, Any, str]] = {
    "input size 60000 x 60000": (
        "config.spec.size",
        [60000, 60000],
        r"config.spec.size must be a list of 2 whole numbers from 1 to 4096, got [60000, 60000]",
    ),
    "no state dict": ("state_dict", ..., "state_dict is missing"),
    "a non-tensor weight": (
        "state_dict",
        {"head.weight": [1.0, 2.0]},
        "state_dict must map names to tensors",
    ),
    "no input spec": ("config.spec", ..., "config.spec is missing"),
    "head given as a string": ("config.head", "mlp", "config.head must be a mapping"),
    "format_version true": ("format_version", True, "format_version must be the whole number 2"),
    "format_version as text": ("format_version", "2", "format_version must be the whole number 2"),
    "repeated class name": ("config.classes", ["cats", "cats"], "must not repeat a name"),
    "empty class name": ("config.classes", ["cats", ""], "must hold non-empty strings only"),
    "one class": ("config.classes", ["cats"], "config.classes must be a list of 2 to"),
    "negative std": ("config.spec.std", [0.2, -1.0, 0.2], "config.spec.std must be a list of 3 positive"),
    "unknown interpolation": (
        "config.spec.interpolation",
        "magic",
        "config.spec.interpolation must be one of",
    ),
    "feature width out of range": (
        "config.num_features",
        10**12,
        "config.num_features must be a whole number",
    ),
    "unknown field": ("config.surprise", 1, "config.surprise is not a known field"),
    "unregistered head": ("config.head.name", "fancy", "needs the head 'fancy'"),
    "head settings the head refuses": ("config.head.dropout", 7.0, "head refuses"),
    "unregistered source": ("config.backbone", "mine:net", "needs the backbone source 'mine'"),
    "backbone without a source": ("config.backbone", "resnet18", "config.backbone must be 'source:name'"),
    "weights of another shape": (
        "config.head",
        {"name": "mlp"},
        "do not fit the model rebuilt from its own config",
    ),
    "a feature width the backbone does not give": ("config.num_features", 16, "cannot rebuild the model"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_every_stored_setting_is_checked(case: str, model_file: Path, tmp_path: Path, images: Path) -> None:
    field, value, message = MODEL_CASES[case]
    path = resigned(_edit(load_checkpoint(model_file), field, value), tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)
    code, _, err = cli("predict", "-m", path, images, "-q")
    one_line(code, err, message)


def test_swapped_class_names_are_refused_not_flipped(model_file: Path, tmp_path: Path) -> None:
    metadata, tensors = read_raw(model_file)
    metadata["ensemblenet"] = metadata["ensemblenet"].replace('["cats","dogs"]', '["dogs","cats"]')
    with pytest.raises(CheckpointError, match="corrupted or was modified"):
        load_model(write_raw(tmp_path / "swapped.pt", metadata, tensors))


ENSEMBLE_CASES: dict[str, tuple[str, Any, str]] = {
    "a member without weights": ("members.0.state_dict", ..., "members.0.state_dict is missing"),
    "an unknown TTA key": (
        "tta",
        {"flip": True, "crops": 0, "crop_scale": 0.875, "flips": 2},
        "tta.flips is not",
    ),
    "TTA crops 3": ("tta", {"flip": True, "crops": 3, "crop_scale": 0.875}, "tta.crops must be 0 or 5"),
    "an unregistered strategy": ("strategy.name", "magic", "needs the strategy 'magic'"),
    "weights for three members": ("strategy.state.weights", [0.2, 0.3, 0.5], "strategy cannot be restored"),
    "no members": ("members", [], "members must be a list of 1 to"),
    "a member with other classes": (
        "members.1.config.classes",
        ["cats", "horses"],
        "members.1.config.classes",
    ),
}


@pytest.mark.parametrize("case", sorted(ENSEMBLE_CASES))
def test_every_stored_ensemble_setting_is_checked(
    case: str, tmp_path: Path, source: str, images: Path
) -> None:
    torch.manual_seed(0)
    members = [create_model(f"{source}:{w}", ["cats", "dogs"], head="linear") for w in (4, 6)]
    good = Ensemble(members, weights=[1, 3], tta="flip").save(tmp_path / "ens.pt")
    contents = read_document(good, what="ensemble file").document  # settings with tensors in place
    field, value, message = ENSEMBLE_CASES[case]
    target = contents
    *parents, last = field.split(".")
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    path = resigned(contents, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as caught:
        load_ensemble(path)
    assert message in str(caught.value), str(caught.value)
    code, _, err = cli("predict", "-m", path, images, "-q")
    one_line(code, err, message)


def _png(path: Path) -> Path:
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path, format="PNG")
    return path


def _jpeg(path: Path) -> Path:
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path, format="JPEG")
    return path


def _onnx(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [value("x", onnx.TensorProto.FLOAT, [1])],
        [value("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph, producer_name="pytorch"), str(path))
    return path


FOREIGN: dict[str, tuple[Callable[[Path], Path], str]] = {
    "text": (
        lambda p: (p.write_text("model weights go here\n"), p)[1],
        "a text file (starting 'model weights",
    ),
    "passwd": (
        lambda p: (
            p.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n"),
            p,
        )[1],
        "a text file (starting 'root:x:0:0",
    ),
    "random bytes": (
        lambda p: (p.write_bytes(b"\x93\x07" + np.random.default_rng(0).bytes(4096)), p)[1],
        "binary data of no known kind",
    ),
    "empty": (lambda p: (p.write_bytes(b""), p)[1], "empty (0 bytes)"),
    "jpeg": (_jpeg, "a JPEG image; images go after the options"),
    "png": (_png, "a PNG image; images go after the options"),
    "onnx": (_onnx, "an ONNX model (an export"),
    "directory": (lambda p: (p.mkdir(), p)[1], "is a directory, not a regular file"),
    "device": (lambda p: Path(os.devnull), "is a character device, not a regular file"),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_foreign_files_say_what_they_are_and_what_to_do(kind: str, tmp_path: Path, images: Path) -> None:
    make, message = FOREIGN[kind]
    path = make(tmp_path / f"not-a-model.{'onnx' if kind == 'onnx' else 'pt'}")
    for load in (load_model, load_ensemble):
        with pytest.raises(CheckpointError) as caught:
            load(path)
        assert message in str(caught.value) and "possibly code" not in str(caught.value)
    code, _, err = cli("predict", "-m", path, images, "-q")
    one_line(code, err, message)


@POSIX
def test_a_named_pipe_is_refused_without_hanging(tmp_path: Path, images: Path) -> None:
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)  # nothing ever writes to it: opening it for reading would block forever
    with pytest.raises(CheckpointError, match=r"named pipe \(FIFO\), not a regular file"):
        load_model(fifo)
    done = run_cli("predict", "-m", fifo, images, "-q")  # TIMEOUT: a hang fails the test
    one_line(done.returncode, done.stderr, "named pipe (FIFO)")


# ------------------------------------------------------------------------- 3. resume is checked


def _train(data: Path, out: Path, *extra: object) -> tuple[int, str, str]:
    return cli(
        "train", data, "--backbone", BACKBONE, "--weights", "none", "--size", "32", "--epochs", "2",
        "--batch-size", "4", "--head", "linear", "-o", out, "--json", "-q", *extra,
    )  # fmt: skip


def test_resume_refuses_another_run_and_saves_what_it_says(tmp_path: Path) -> None:
    data = write_class_folder(tmp_path / "data", per_class=6, size=(32, 32))
    first = tmp_path / "first.pt"
    code, _, err = _train(data, first)
    assert code == 0, err
    state = tmp_path / "first.state.pt"
    other_data = shutil.copytree(data, tmp_path / "other-data")
    _png(other_data / "cats" / "extra.png")
    cases: list[tuple[list[object], str]] = [
        (["--backbone", "torchvision:resnet18"], "backbone: 'torchvision:mobilenet_v3_small' in the state"),
        (["--size", "48"], "input_spec: {"),
        (["--lr", "0.01"], "lr: 0.001 in the state, 0.01 now"),
        (["--seed", "1"], "seed: 0 in the state, 1 now"),
        (["--head", "mlp"], "'name': 'mlp'"),
        (["--freeze", "none"], "freeze: {'name': 'bn_only'"),
    ]
    for extra, needle in cases:
        code, out, err = _train(data, tmp_path / "again.pt", "--resume", state, *extra)
        one_line(code, err, "cannot resume from", "different run", needle)
        assert out == "" and not (tmp_path / "again.pt").exists()
    code, _, err = _train(other_data, tmp_path / "again.pt", "--resume", state)
    one_line(code, err, "train_files: ")  # one more image: another data set

    # resuming into a new --out when the best epoch is already in the state: the file it names exists
    code, out, err = _train(data, tmp_path / "new.pt", "--resume", state)
    assert code == 0, err
    doc = json.loads(out)
    assert Path(doc["model"]) == tmp_path / "new.pt" and (tmp_path / "new.pt").is_file()
    code, out, err = _train(data, tmp_path / "newer.pt", "--resume", state)
    assert code == 0 and load_model(tmp_path / "newer.pt").classes == ("cats", "dogs")


# ------------------------------------------------------------------------- 4. one line, never a traceback


@pytest.mark.parametrize("command", ["train", "predict", "evaluate"])
def test_an_unavailable_device_is_one_line_before_any_work(command: str, tmp_path: Path) -> None:
    device = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: absent on any machine
    missing = tmp_path / "absent.pt"  # checked later: the device error must come first
    argv = {
        "train": ["train", tmp_path / "no-data", "--backbone", "nope:x"],
        "predict": ["predict", "-m", missing, tmp_path],
        "evaluate": ["evaluate", "-m", missing, tmp_path],
    }[command]
    code, _, err = cli(*argv, "--device", device)
    one_line(code, err, f"device '{device}' is not available")
    if not torch.cuda.is_available():
        code, _, err = cli(*argv, "--device", "cuda")
        one_line(code, err, "device 'cuda' is not available")


def test_an_unexpected_error_is_still_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ensemblenet.cli import _inference

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(_inference, "_load_ensemble", broken)
    code, _, err = cli("evaluate", "-m", tmp_path / "m.pt", tmp_path)
    one_line(code, err, "error: ZeroDivisionError: a bug", "-v")
    code, _, err = cli("evaluate", "-m", tmp_path / "m.pt", tmp_path, "-v")
    assert code == 1 and "Traceback" in err


def test_evaluate_on_a_folder_with_one_class_says_so(tmp_path: Path, model_file: Path) -> None:
    folder = write_class_folder(tmp_path / "data", per_class=2)
    shutil.rmtree(folder / "dogs")
    code, _, err = cli("evaluate", "-m", model_file, folder, "-q")
    one_line(code, err, "is not a labelled folder", "found 1 class(es) ['cats']")


@POSIX
def test_a_full_disk_during_training_is_one_line_naming_the_file(tmp_path: Path) -> None:
    data = write_class_folder(tmp_path / "data", per_class=6, size=(32, 32))
    out = tmp_path / "runs" / "m.pt"

    def small_files() -> None:  # what a full disk does to a write, for this process only
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))

    argv = ["train", data, "--backbone", BACKBONE, "--weights", "none", "--size", "32", "--out", out]
    done = run_cli(*argv, "--epochs", "1", "-q", preexec_fn=small_files)
    line = one_line(done.returncode, done.stderr, "cannot write", "File too large")
    assert str(out.with_name("m.state.pt")) in line or str(out) in line
    assert [p.name for p in out.parent.iterdir() if p.suffix == ".tmp"] == []


# ------------------------------------------------------------------------- 5. no silent overwrites


def test_outputs_are_checked_before_any_work(tmp_path: Path, model_file: Path, images: Path) -> None:
    before = model_file.read_bytes()
    code, out, err = cli("predict", "-m", model_file, images, "-o", model_file, "-q")
    one_line(code, err, f"--output {model_file} is also an input")
    assert model_file.read_bytes() == before and out == ""
    code, _, err = cli("ensemble", model_file, model_file, "-o", model_file, "-q")
    one_line(code, err, "is also an input")

    folder = tmp_path / "a-folder"
    folder.mkdir()
    started = time.monotonic()
    code, _, err = _train(images, folder)
    one_line(code, err, f"--out {folder} is an existing folder")
    assert list(folder.iterdir()) == [] and time.monotonic() - started < 60  # refused, not trained

    target = tmp_path / "p.csv"
    target.write_text("keep me\n")
    code, _, err = cli("predict", "-m", model_file, images, "-o", target, "-q")
    one_line(code, err, "already exists", "--overwrite")
    assert target.read_text() == "keep me\n"
    code, _, err = cli("predict", "-m", model_file, images, "-o", target, "-q", "--overwrite")
    assert code == 0 and target.read_text().startswith("path,prediction")
    assert not (tmp_path / "p.csv.lock").exists()  # the lock goes when the command ends


@POSIX
def test_two_runs_writing_the_same_output_cannot_both_succeed(tmp_path: Path) -> None:
    data = write_class_folder(tmp_path / "data", per_class=6, size=(32, 32))
    out = tmp_path / "m.pt"
    argv = ["train", data, "--backbone", BACKBONE, "--weights", "none", "--size", "32", "--out", out, "-q"]
    lock = tmp_path / "m.pt.lock"
    with subprocess.Popen(
        [*ensemblenet(), *map(str, argv), "--epochs", "500"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    ) as first:
        deadline = time.monotonic() + TIMEOUT
        while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            assert lock.exists(), "the first run never took its lock"
            second = run_cli(*argv, "--epochs", "1")
            one_line(second.returncode, second.stderr, f"pid {first.pid}", "is being written by another")
        finally:
            first.send_signal(signal.SIGKILL)  # dies holding its lock: a stale lock
            first.communicate(timeout=TIMEOUT)
    assert lock.exists()
    third = run_cli(*[a for a in argv if a != "-q"], "--epochs", "1", "--overwrite")
    assert third.returncode == 0, third.stderr
    assert f"removed a stale lock {lock}" in third.stderr and not lock.exists() and out.is_file()


# ------------------------------------------------------------------------- 6. one bad file never ends a run


@POSIX
def test_symlink_loops_and_dangling_links_are_skipped_and_counted(tmp_path: Path, model_file: Path) -> None:
    data = write_class_folder(tmp_path / "data", per_class=6, size=(32, 32))
    os.symlink("loop.png", data / "cats" / "loop.png")
    os.symlink(tmp_path / "gone.png", data / "dogs" / "dangling.png")
    code, out, err = _train(data, tmp_path / "trained.pt")
    assert code == 0, err
    reasons = {Path(s["path"]).name: s["reason"] for s in json.loads(out)["skipped_files"]}
    assert reasons["loop.png"].startswith("symbolic link loop")
    assert reasons["dangling.png"].startswith("dangling symbolic link")
    code, out, err = cli("evaluate", "-m", model_file, data, "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["n_skipped"] == 2 and json.loads(out)["n"] == 12

    # a link that turns into a loop after the scan: skipped at decode time, the run goes on
    samples = scan_folder(data)
    victim = samples.paths[0]
    victim.unlink()
    os.symlink(victim.name, victim)
    code, out, err = cli("predict", "-m", model_file, *samples.paths[:3], "--format", "jsonl", "-q")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["error"] for r in rows] == ["unreadable image", None, None]


# ------------------------------------------------------------------------- 7. CSV formula injection


def test_csv_cells_that_look_like_formulas_are_escaped(
    tmp_path: Path, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = save_model(create_model(f"{source}:8", ["=cmd", "dogs"], head="linear"), tmp_path / "m.pt")
    monkeypatch.chdir(tmp_path)
    names = ["=1+2.png", "+3.png", "-4.png", "@sum.png", "\tx.png", "plain.png"]
    for name in names:
        _png(tmp_path / name)
    argv = [f"./{name}" for name in names]  # './-4.png': not an option to the parser; printed as '-4.png'
    code, out, err = cli("predict", "-m", model, *argv, "-q")
    assert code == 0, err
    rows = out.splitlines()
    assert rows[0].startswith("path,prediction,'=cmd,dogs,error")
    cells = [row.split(",")[0] for row in rows[1:]]
    assert cells == ["'=1+2.png", "'+3.png", "'-4.png", "'@sum.png", "'\tx.png", "plain.png"]
    assert all(not row.split(",")[1].startswith("=") for row in rows[1:])
    code, out, _ = cli("predict", "-m", model, *argv, "--format", "jsonl", "-q")
    assert [json.loads(line)["path"] for line in out.splitlines()] == names  # JSON keeps the names


# ------------------------------------------------------------------------- fuzz: bytes and settings

_FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _same_model(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa) and a.config == b.config  # type: ignore[operator]


@_FUZZ
@given(data=st.data())
def test_fuzz_bytes_load_identically_or_raise_checkpoint_error(
    data: st.DataObject, model_file: Path, tmp_path: Path
) -> None:
    good = model_file.read_bytes()
    reference = load_model(model_file)
    mutated = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        where = data.draw(st.integers(0, len(mutated) - 1), label="offset")
        how = data.draw(st.sampled_from(["flip", "cut", "insert", "header"]), label="how")
        if how == "flip":
            mutated[where] ^= data.draw(st.integers(1, 255), label="xor")
        elif how == "cut":
            del mutated[where : where + data.draw(st.integers(1, 64), label="cut")]
        elif how == "insert":
            mutated[where:where] = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
        else:  # aim at the header: its length field and JSON
            spot = data.draw(st.integers(0, min(len(mutated) - 1, 400)), label="header offset")
            mutated[spot] = data.draw(st.integers(0, 255), label="byte")
        if not mutated:
            break
    path = tmp_path / "fuzzed.pt"
    path.write_bytes(bytes(mutated))
    try:
        loaded = load_model(path)
    except CheckpointError as exc:
        assert "\n" not in str(exc)
        return
    assert _same_model(loaded, reference)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@_FUZZ
@given(data=st.data())
def test_fuzz_resigned_settings_load_or_raise_checkpoint_error(
    data: st.DataObject, model_file: Path, tmp_path: Path
) -> None:
    """Edits to the settings with the digest recomputed (anyone can): the schema, not the digest,
    must turn every one of them into a model or a CheckpointError."""
    document = load_checkpoint(model_file)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        path = data.draw(st.sampled_from(_paths(document)), label="path")
        *parents, last = path
        node: Any = document
        for key in parents:
            node = node[key]
        if data.draw(st.booleans(), label="delete") and isinstance(node, dict):
            del node[last]
        else:
            node[last] = data.draw(_JSON, label="value")
    target = tmp_path / "resigned.pt"
    try:
        write_document(document, target)
    except Exception:  # a value the writer itself refuses (e.g. a key it cannot store): nothing to load
        return
    try:
        loaded = load_model(target)
    except CheckpointError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(loaded, torch.nn.Module) and len(loaded.classes) >= 2
