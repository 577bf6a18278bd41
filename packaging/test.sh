#!/usr/bin/env bash
# Set everything up on a fresh machine and run the whole test suite:
# ruff, mypy, then pytest (engine, CLI, store conformance on every store,
# real FUSE mounts where /dev/fuse exists).  .ci/run calls exactly this.
#
# The suite runs with the patched pyfuse3 that install.sh builds
# (packaging/pyfuse3/); then the mount tests in STOCK_TESTS run again with the
# released pyfuse3 (installed beside it, first on PYTHONPATH), since dsfs must
# work with either.  DSFS_PYFUSE3=stock: stock pyfuse3 only, for everything.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/packaging/install.sh"
venv=${DSFS_VENV:-$here/.venv}
cd "$here"
echo "== ruff" >&2
"$venv/bin/ruff" check dsfs cli tests
echo "== mypy" >&2
"$venv/bin/mypy"
flavour=$("$venv/bin/python" -c 'from dsfs.fuse.adapter import pyfuse3_build; print(pyfuse3_build())')
echo "== pytest ($flavour)" >&2
if [ "${DSFS_PYFUSE3:-patched}" = stock ]; then
    exec "$venv/bin/pytest" -q "$@"
fi
if ! "$venv/bin/python" -c 'from dsfs.fuse.adapter import PATCHED; assert PATCHED'; then
    echo "test.sh: the patched pyfuse3 is not installed (see install.sh's output)" >&2
    exit 1
fi
"$venv/bin/pytest" -q "$@"
if [ $# -eq 0 ]; then
    # a read-only and a writable mount's requests, everyday tools on a mount, and
    # files held open across a discard (per-open handles, not per inode)
    stock_tests=${STOCK_TESTS:-tests/test_fuse_requests.py
        tests/test_mount.py::test_tree_matches_source
        tests/test_mount.py::test_tools_cp_diff_tar_find_ls_stat
        tests/test_mount.py::test_python_open_seek_mmap
        tests/test_mount.py::test_eight_parallel_readers
        tests/test_overlay.py::test_discard_with_files_held_open}
    bash "$here/packaging/pyfuse3/build.sh" "$venv" --stock "$venv/pyfuse3-stock"
    echo "== pytest with stock pyfuse3: $stock_tests" >&2
    # shellcheck disable=SC2086
    PYTHONPATH="$venv/pyfuse3-stock${PYTHONPATH:+:$PYTHONPATH}" \
        "$venv/bin/pytest" -q -p no:cacheprovider $stock_tests
fi
