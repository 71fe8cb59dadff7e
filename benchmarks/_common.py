"""Helpers shared by the benchmark scripts (not part of the library).

Every benchmark runs each side in its own subprocess (``python SCRIPT --side NAME ...``), so the
peak RSS each side reports (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own, and the
parent prints one table plus one JSON document.

**Roofline.** Every benchmark also prints how far each side is from the machine's limit: its
achieved GFLOP/s next to the fp32 matrix-multiply peak measured in the same run
(:func:`gemm_peak_gflops`: the best of several ``2048 x 2048 @ 2048 x 2048`` float32 products in
PyTorch on its default threads; ``2 * 2048**3`` floating-point operations each). FLOPs of a model
are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of one image (and
the backward pass for a training step): it counts 2 FLOPs per multiply-add of convolutions and
matrix products, and nothing for element-wise operations, pooling or normalization, so the
achieved figure is a slight underestimate of the arithmetic done.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "dogs-vs-cats-200px"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def pick(n: int, offset: int = 0) -> list[tuple[str, int]]:
    """``n`` images (half cats, half dogs), the same on every run: sorted names from ``offset``."""
    if not DATA.is_dir():
        sys.exit(f"benchmark data not found: {DATA}")
    chosen: list[tuple[str, int]] = []
    for label, cls in enumerate(("cats", "dogs")):
        names = sorted(os.listdir(DATA / cls), key=lambda s: int(s.split(".")[1]))
        chosen += [(str(DATA / cls / name), label) for name in names[offset : offset + n // 2]]
    return chosen


def offline_file(package: str, relative: str) -> str:
    """A weights file shipped inside an installed pip package (found, never imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"offline weights package {package!r} is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))) / relative)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def hardware() -> dict[str, Any]:
    model = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    import torch

    versions = {}
    for package in ("onnxruntime", "onnx", "timm"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "absent"
    flags = ""
    with contextlib.suppress(OSError, StopIteration):
        text = Path("/proc/cpuinfo").read_text()
        flags = next(line for line in text.splitlines() if line.startswith("flags")) + " "
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in flags]
    return {
        "cpu": model,
        "isa": isa,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **versions,
        "gpu": torch.cuda.is_available(),
        "load_average": [round(x, 2) for x in load_average()],
    }


def gemm_peak_gflops(n: int = 2048, repeats: int = 7) -> float:
    """The machine's measured fp32 matrix-multiply peak (best of ``repeats`` ``n x n`` products)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):  # warm-up: thread pool, caches, clock
        a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def forward_gflop(module: Any, size: tuple[int, int], dtype: Any = None) -> float:
    """GFLOP of one forward pass of ``module`` on one ``(1, 3, *size)`` image (FlopCounterMode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, *size) if dtype is None else torch.randint(0, 256, (1, 3, *size), dtype=dtype)
    was_training = module.training
    module.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    module.train(was_training)
    return counter.get_total_flops() / 1e9


def step_gflop(model: Any, size: tuple[int, int], classes: int = 2) -> float:
    """GFLOP per image of one training step (forward + backward of what requires grad)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x, y = torch.rand(2, 3, *size), torch.arange(2) % classes
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2 / 1e9


def roofline_rows(sides: dict[str, tuple[float, float]], peak: float) -> list[list[str]]:
    """Rows ``side, GFLOP per image, images/s, achieved GFLOP/s, % of peak`` for :func:`table`;
    ``sides`` maps a side to ``(GFLOP per image, images per second)``."""
    rows = []
    for side, (gflop, rate) in sides.items():
        achieved = gflop * rate
        rows.append([side, f"{gflop:.3f}", f"{rate:.1f}", f"{achieved:.1f}", f"{100 * achieved / peak:.0f}%"])
    return rows


ROOFLINE_HEADER = ["side", "GFLOP/image", "images/s", "achieved GFLOP/s", "of GEMM peak"]


def print_roofline(sides: dict[str, tuple[float, float]], peak: float) -> dict[str, Any]:
    """Print the roofline table (see the module docstring) and return it for the JSON report."""
    print(f"\nRoofline: measured fp32 GEMM peak (2048^2, torch, {_threads()} threads) = {peak:.1f} GFLOP/s")
    print(table(roofline_rows(sides, peak), ROOFLINE_HEADER))
    return {
        "gemm_peak_gflops": peak,
        "sides": {
            side: {
                "gflop_per_image": g,
                "images_per_s": r,
                "achieved_gflops": g * r,
                "fraction_of_peak": g * r / peak,
            }
            for side, (g, r) in sides.items()
        },
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15-minute load averages: how busy the shared machine was."""
    return os.getloadavg()


def emit(result: dict[str, Any]) -> None:
    """What a side prints last: one JSON line the parent reads."""
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    print("RESULT " + json.dumps(result), flush=True)


def run_side(script: str, side: str, args: Sequence[str]) -> dict[str, Any]:
    """Run one side in a fresh interpreter and return its RESULT JSON."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, script, "--only", side, *args], env=env, capture_output=True, text=True, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(
            f"side {side!r} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    result["process_seconds"] = round(time.perf_counter() - started, 1)
    return result


def print_report(benchmark: str, args: Any, results: dict[str, Any]) -> None:
    """The last thing a benchmark prints: its name, the hardware, its arguments and results, as JSON."""
    report = {"benchmark": benchmark, "hardware": hardware(), "args": vars(args), "results": results}
    print(json.dumps(report, indent=1, default=str))


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class Baton:
    """Lets several training loops, each in its own thread, take turns one batch at a time.

    Only the holder computes, so the sides never compete for the CPU, and a load spike from other
    programs on a shared machine hits every side about equally instead of whichever ran at that
    moment. Each side's time is the sum of its own turns (``seconds[name]``, one entry per epoch).
    """

    def __init__(self, names: Sequence[str]) -> None:
        import threading

        self.order, self.turn, self.done = list(names), 0, set[str]()
        self.cond = threading.Condition()
        self.seconds: dict[str, list[float]] = {name: [] for name in names}
        self._since = 0.0

    def new_epoch(self, name: str) -> None:
        self.seconds[name].append(0.0)

    def wait(self, name: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.order[self.turn] == name)
        self._since = time.perf_counter()

    def release(self, name: str, finished: bool = False) -> None:
        if self.seconds[name]:
            self.seconds[name][-1] += time.perf_counter() - self._since
        with self.cond:
            if finished:
                self.done.add(name)
            if len(self.done) < len(self.order):
                self.turn = (self.turn + 1) % len(self.order)
                while self.order[self.turn] in self.done:
                    self.turn = (self.turn + 1) % len(self.order)
            self.cond.notify_all()


def notebook_dataset(items: Sequence[tuple[str, int]], transform: Any) -> Any:
    """The reference notebook's dataset: open each file with PIL, convert to RGB, apply ``transform``.

    Built on first use so that importing this module does not import torch (the memory benchmark
    measures each side in a fresh process)."""
    from PIL import Image
    from torch.utils.data import Dataset

    class FolderDataset(Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(items)

        def __getitem__(self, i: int) -> tuple[Any, int]:
            path, label = items[i]
            return transform(Image.open(path).convert("RGB")), label

    return FolderDataset()


def warm_files(paths: Sequence[str]) -> None:
    """Read every file once so no side pays for the cold OS file cache."""
    for path in paths:
        with open(path, "rb") as fh:
            fh.read()
