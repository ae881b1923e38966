#!/usr/bin/env bash
# Set up and run the whole test suite: fetch the reference models (cached,
# sha256-checked), then build and run every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh all
# The server tests drive `quarrel serve` with the official openai client.
venv=target/test-venv
if ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "openai==3.54.0"
fi
export QUARREL_TEST_PYTHON="$PWD/$venv/bin/python"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
