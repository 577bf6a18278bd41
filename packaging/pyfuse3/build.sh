#!/usr/bin/env bash
# Build pyfuse3 with dsfs's patch and install it into a virtual environment.
#
#   bash packaging/pyfuse3/build.sh VENV          # patched build (skipped if current)
#   bash packaging/pyfuse3/build.sh VENV --stock DIR
#       also put stock pyfuse3 (the same release, unpatched) into DIR, for
#       PYTHONPATH=DIR runs of the tests that check dsfs works without the patch
#
# The sdist comes from the package index through pip (checked against the
# digest below), is patched with every packaging/pyfuse3/*.patch in name
# order, and built with Cython (pip fetches it for the build) against the
# system's libfuse3 (libfuse3-dev, pkg-config, a C compiler).  The build's
# version is the release plus a local tag naming the patches' digest
# (3.5.0+dsfs.1a2b3c4d), so a venv that has it is left alone.
#
# What the patch does, and how to drop it: docs/design.md, "The FUSE loop".
# Exit status: 0 built or current; 1 the build failed (the venv keeps the
# pyfuse3 it had: dsfs runs with stock pyfuse3 too).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
venv=${1:?usage: build.sh VENV [--stock DIR]}
release=3.5.0
sdist_sha256=88399a9494b88603230bba300f4ba9ad63fece5ed514ca3633d555a0c6a42b24
py="$venv/bin/python"

patches=("$here"/*.patch)
tag=$(cat "${patches[@]}" | sha256sum | cut -c1-8)
version="$release+dsfs.$tag"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch_sdist() {
    "$py" -m pip download -q --no-deps --no-binary :all: "pyfuse3==$release" -d "$work" \
        2> >(grep -v '^WARNING: Location' >&2)
    local sdist="$work/pyfuse3-$release.tar.gz"
    echo "$sdist_sha256  $sdist" | sha256sum -c --quiet -
    tar -xzf "$sdist" -C "$work"
}

if [ "${2:-}" = "--stock" ]; then
    stock=${3:?--stock needs a directory}
    if [ -d "$stock/pyfuse3-$release.dist-info" ]; then
        echo "build.sh: stock pyfuse3 $release is in $stock already" >&2
    else
        rm -rf "$stock"
        "$py" -m pip install -q --no-deps --target "$stock" "pyfuse3==$release" \
            2> >(grep -v '^WARNING: Location' >&2)
        echo "build.sh: stock pyfuse3 $release in $stock" >&2
    fi
fi

installed=$("$py" -c 'import importlib.metadata as m; print(m.version("pyfuse3"))' 2>/dev/null || true)
if [ "$installed" = "$version" ]; then
    echo "build.sh: pyfuse3 $version is installed already" >&2
    exit 0
fi

fetch_sdist
src="$work/pyfuse3-$release"
for p in "${patches[@]}"; do
    patch -s -p1 -d "$src" < "$p"
done
rm -f "$src/src/pyfuse3/__init__.c"  # generated from the patched .pyx by Cython
if ! SETUPTOOLS_SCM_PRETEND_VERSION="$version" "$py" -m pip install -q --no-deps "$src" \
        2> >(grep -v '^WARNING: Location' >&2); then
    echo "build.sh: building the patched pyfuse3 failed; $venv keeps pyfuse3 ${installed:-(none)}" >&2
    exit 1
fi
"$py" -c 'import pyfuse3; assert "read_first_loop" in pyfuse3.extensions'
echo "build.sh: pyfuse3 $version (patched) installed in $venv" >&2
