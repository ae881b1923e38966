#!/usr/bin/env bash
# Set up and run the whole test suite: fetch the reference models (cached,
# sha256-checked), then build and run every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh all
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
