"""Benchmark 4: peak resident memory (RSS) of each side of benchmarks 1 and 3.

Each side runs alone in a fresh interpreter (``train_throughput.py --only SIDE``: one epoch over
``--images`` images at batch 32; ``inference.py --only SIDE``: one pass over ``--images`` images),
and reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss``: the whole process, libraries and
models included.

Run (2.5 minutes on the shared 2-core machine of docs/performance.rst)::

    PYTHONPATH=src python benchmarks/memory.py            # --images 64
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_report, run_side, table

HERE = Path(__file__).resolve().parent
JOBS = [
    ("training", "train_throughput.py", ("plain", "ensemblenet", "ens_nocl")),
    ("inference", "inference.py", ("plain", "ensemblenet", "ens_fast", "onnxruntime")),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    results: dict[str, dict[str, object]] = {}
    rows = []
    for task, script, sides in JOBS:
        for side in sides:
            extra = ["--images", str(args.images)] + (["--epochs", "1"] if task == "training" else [])
            r = run_side(str(HERE / script), side, extra)
            results[f"{task}/{side}"] = r
            rows.append([task, side, f"{r['peak_rss_mib']:.0f}", f"{r['process_seconds']:.0f}"])
    print(table(rows, ["task", "side", "peak RSS MiB", "process s"]))
    print_report("memory", args, results)


if __name__ == "__main__":
    main()
