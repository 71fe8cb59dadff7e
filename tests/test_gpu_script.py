"""benchmarks/gpu_reference.sh: every command it would run is one the examples accept.

No GPU is needed: ``DRY_RUN=1`` prints the commands (tab-separated) instead of running them, and
each is parsed by the example's own argument parser, so renaming an option in an example without
updating the script fails here rather than on a lent GPU machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import REPO, load_example

SCRIPT = REPO / "benchmarks" / "gpu_reference.sh"


def run_script(**env: str) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    full = {**os.environ, "PATH": path, "VIRTUAL_ENV": sys.prefix, **env}
    return subprocess.run(
        ["bash", str(SCRIPT)], cwd=REPO, env=full, capture_output=True, text=True, timeout=120, check=False
    )


def test_every_command_of_the_gpu_script_parses() -> None:
    done = run_script(DRY_RUN="1", R18="r18.pth", R34="r34.pth", OUT="out", WORKERS="3")
    assert done.returncode == 0, done.stderr
    commands = [line.split("\t") for line in done.stdout.splitlines()]
    # both recipes on Dogs vs Cats, ants vs bees, and the ResNet pair when its files are given
    assert len(commands) == 6
    outs = []
    examples = {name: load_example(name) for name in ("cats_vs_dogs", "ants_vs_bees")}
    for argv in commands:
        assert argv[0] == "python" and argv[1].startswith("examples/")
        args = examples[Path(argv[1]).stem].parse_args(argv[2:])
        assert (args.device, args.workers, args.no_progress) == ("cuda", 3, True)
        assert args.recipe in ("seed", "best")
        outs.append(str(args.out))
    assert len(set(outs)) == 6 and all(o.startswith("out/") for o in outs)  # no report overwrites another
    resnet = [a for a in commands if "torchvision:resnet18=r18.pth,torchvision:resnet34=r34.pth" in a]
    assert len(resnet) == 2
    assert len(run_script(DRY_RUN="1").stdout.splitlines()) == 4  # without weight files: no ResNet runs


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_without_a_gpu_it_stops_before_running_anything(tmp_path: Path) -> None:
    done = run_script(OUT=str(tmp_path / "out"))
    assert done.returncode != 0
    assert "no CUDA device visible to torch" in done.stderr
    assert not (tmp_path / "out").exists()
