#!/usr/bin/env bash
# Set everything up on a fresh machine and run the whole test suite:
# ruff, mypy, then pytest (engine, CLI, store conformance on every store,
# real FUSE mounts where /dev/fuse exists).  .ci/run calls exactly this.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/packaging/install.sh"
venv=${DSFS_VENV:-$here/.venv}
cd "$here"
echo "== ruff" >&2
"$venv/bin/ruff" check dsfs cli tests
echo "== mypy" >&2
"$venv/bin/mypy"
echo "== pytest" >&2
"$venv/bin/pytest" -q "$@"
