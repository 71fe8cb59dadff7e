#!/usr/bin/env bash
# The full reference benchmark on one CUDA GPU: both recipes on Dogs vs Cats (all images) and on
# ants vs bees, each writing a report folder (report.md, report.json, figures) under $OUT.
#
#   bash benchmarks/gpu_reference.sh [DOGS_VS_CATS_FOLDER]        # default ../shared/data/dogs-vs-cats-200px
#   R18=r18.pth R34=r34.pth bash benchmarks/gpu_reference.sh      # also the notebook's ResNet18 + ResNet34
#   DRY_RUN=1 bash benchmarks/gpu_reference.sh                    # print the commands, run nothing
#
# On CUDA the trainer autocasts to bf16 (TrainConfig.precision="auto"); images are decoded by
# $WORKERS DataLoader workers. The seed recipe keeps the notebook's batch of 32 (it is what is being
# reproduced); the best recipe trains heads on cached features with $BEST_BATCH images per step.
# Run from the repository root with the virtual environment active.
set -euo pipefail
[[ -z "${VIRTUAL_ENV:-}" && -f .venv/bin/activate ]] && . .venv/bin/activate

DATA=${1:-../shared/data/dogs-vs-cats-200px}
OUT=${OUT:-runs/gpu}
WORKERS=${WORKERS:-8}
BEST_BATCH=${BEST_BATCH:-256}

DRY_RUN=${DRY_RUN:-}
if [[ -z "$DRY_RUN" ]]; then
python - <<'PY'
import torch
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device visible to torch; this script is for a GPU machine (see docs/benchmarks.rst)")
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
fi

members=(--members torchvision:mobilenet_v2,timm:tf_efficientnet_lite0)
run() {  # name, then the example's arguments
    local name=$1; shift
    if [[ -n "$DRY_RUN" ]]; then  # one line per command, arguments NUL-free and tab-separated
        (IFS=$'\t'; echo "python"$'\t'"$*"$'\t'--device$'\t'cuda$'\t'--workers$'\t'"$WORKERS"$'\t'--out$'\t'"$OUT/$name"$'\t'--no-progress)
        return
    fi
    mkdir -p "$OUT"
    echo "== $name: $*"
    python "$@" --device cuda --workers "$WORKERS" --out "$OUT/$name" --no-progress 2>&1 | tee "$OUT/$name.log"
}

run cats_vs_dogs-best examples/cats_vs_dogs.py --data "$DATA" --limit 0 --recipe best --batch-size "$BEST_BATCH" "${members[@]}"
run cats_vs_dogs-seed examples/cats_vs_dogs.py --data "$DATA" --limit 0 --recipe seed "${members[@]}"
run ants_vs_bees-best examples/ants_vs_bees.py --recipe best
run ants_vs_bees-seed examples/ants_vs_bees.py --recipe seed
if [[ -n "${R18:-}" && -n "${R34:-}" ]]; then
    resnets=(--members "torchvision:resnet18=$R18,torchvision:resnet34=$R34")
    run cats_vs_dogs-resnet-seed examples/cats_vs_dogs.py --data "$DATA" --limit 0 --recipe seed "${resnets[@]}"
    run cats_vs_dogs-resnet-best examples/cats_vs_dogs.py --data "$DATA" --limit 0 --recipe best \
        --batch-size "$BEST_BATCH" "${resnets[@]}"
fi
[[ -n "$DRY_RUN" ]] || echo "reports: $OUT/*/report.md"
