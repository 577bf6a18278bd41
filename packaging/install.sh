#!/usr/bin/env bash
# Install what a fresh Debian/Ubuntu machine lacks for dsfs, then dsfs itself
# into a virtual environment (.venv at the top of the checkout by default).
#
#   bash packaging/install.sh            # system packages + .venv with dsfs
#   DSFS_VENV=/opt/dsfs bash packaging/install.sh
#   DSFS_EXTRAS=test,s3,mount,ui,fsspec  # extras to install (this is the default)
#
# System packages: fuse3 (fusermount3, /dev/fuse), libfuse3-dev, pkg-config,
# gcc and patch (to build pyfuse3 with dsfs's patch), python3-venv, rsync;
# with the test extra also git and sqlite3, which the tests run inside mounts,
# strace and e2fsprogs for the durability and fault tests, and chromium (where
# the system has it) for the web UI's headless-browser test.  Needs root or
# sudo for those; skipped when they are already present.  DSFS_PYFUSE3=stock
# skips the patched pyfuse3 build.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv=${DSFS_VENV:-$here/.venv}
extras=${DSFS_EXTRAS:-test,s3,mount,ui,fsspec}
python=${PYTHON:-python3}

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
pkg-config --exists fuse3 2>/dev/null || need+=(libfuse3-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
"$python" -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v patch >/dev/null 2>&1 || need+=(patch)  # the pyfuse3 patch
command -v cc >/dev/null 2>&1 || need+=(gcc)  # pyfuse3 is built from source
# the tests drive mounts with these real tools too
if [[ ",$extras," == *,test,* ]]; then
    command -v git >/dev/null 2>&1 || need+=(git)
    command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
    # durability tests trace fsyncs; fault tests shut down an ext4 loop image
    command -v strace >/dev/null 2>&1 || need+=(strace)
    command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
fi
# the web UI's browser test: Debian's chromium, where the package exists
want_chromium=""
if [[ ",$extras," == *,test,* ]] && ! command -v chromium >/dev/null 2>&1 \
        && command -v apt-get >/dev/null 2>&1; then
    want_chromium=1
fi
if [ ${#need[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install.sh: please install ${need[*]} with your system's package manager" >&2
        exit 1
    fi
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "install.sh: installing system packages: ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -n "$want_chromium" ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    [ ${#need[@]} -gt 0 ] || $sudo apt-get update -qq || true
    if apt-cache show chromium >/dev/null 2>&1; then
        echo "install.sh: installing chromium (the web UI's browser test)" >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null \
            || echo "install.sh: chromium did not install; the browser test will be skipped" >&2
    else
        echo "install.sh: no chromium package here; the browser test will be skipped" >&2
    fi
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q -e "$here[$extras]"
# pyfuse3 with dsfs's patch (a cheaper FUSE request loop; docs/design.md, "The
# FUSE loop"); DSFS_PYFUSE3=stock keeps the released one, and so does a failed build
if [[ ",$extras," == *,mount,* ]] && [ "${DSFS_PYFUSE3:-patched}" != stock ]; then
    bash "$here/packaging/pyfuse3/build.sh" "$venv" \
        || echo "install.sh: dsfs runs with stock pyfuse3 (slower FUSE requests)" >&2
fi
echo "install.sh: dsfs installed in $venv ($("$venv/bin/dsfs" --version))" >&2
