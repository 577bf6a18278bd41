#!/usr/bin/env bash
# Set everything up on a fresh machine, then run the main job on the embedded
# default store: version a sample folder, change it, version it again, and
# show what dsfs knows about it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/packaging/install.sh"
venv=${DSFS_VENV:-$here/.venv}
dsfs="$venv/bin/dsfs"
sample=$(mktemp -d "${TMPDIR:-/tmp}/dsfs-sample.XXXXXX")
trap 'rm -rf "$sample"' EXIT

mkdir -p "$sample/images" "$sample/labels"
for i in $(seq 1 20); do
    head -c $((4096 + i * 100)) /dev/urandom > "$sample/images/img$i.bin"
    echo "label $i" > "$sample/labels/img$i.txt"
done
project="quickstart" name="sample-$(date +%s)"

step() { printf '\n$ %s\n' "$*"; "$@"; }
step "$dsfs" sync "$sample" --project "$project" --name "$name" --tags demo
echo "changed" > "$sample/labels/img1.txt"; rm "$sample/images/img2.bin"
cp "$sample/images/img3.bin" "$sample/images/img3-copy.bin"
step "$dsfs" sync "$sample" --project "$project" --name "$name"
step "$dsfs" search --project "$project" --name "$name"
step "$dsfs" list "$project/$name" --modified
step "$dsfs" diff "$project/$name@1.0.0" "$project/$name@1.0.1"
step "$dsfs" lineage "$project/$name"
copy=$("$dsfs" get "$project/$name")
printf '\n$ dsfs get %s\n%s\n' "$project/$name" "$copy"
step ls -R "$copy"

# Mount the version as a read-only directory (needs /dev/fuse; root or the fuse group).
if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null 2>&1; then
    mnt=$(mktemp -d "${TMPDIR:-/tmp}/dsfs-mnt.XXXXXX")
    trap 'fusermount3 -u "$mnt" 2>/dev/null || true; rm -rf "$sample"; rmdir "$mnt" 2>/dev/null || true' EXIT
    step "$dsfs" mount "$project/$name" "$mnt"
    step ls -l "$mnt" "$mnt/labels"
    step "$dsfs" mounts
    step "$dsfs" umount "$mnt"
else
    echo "(no /dev/fuse here: skipping 'dsfs mount')"
fi
