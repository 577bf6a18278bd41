"""A demo history over a real tree (the Python standard library), for the web
UI's tests and the README's screenshot.

    python tests/ui_demo.py [--full] [--hostile]    # with DSFS_* set: builds it, prints ids

Versions of ``demo/stdlib``: 1.0.0 the tree; 1.0.1 edits it and adds a
``data/`` folder (CSV, JSON, PNG images); 1.0.2 a branch from 1.0.0; 1.0.3
merges 1.0.1 and 1.0.2 (two parents); 1.0.4 edits the merge; 1.0.2 is then
deleted with ``--force`` (hidden, kept for its child); 1.0.5 is a squash of
1.0.4.  ``--hostile`` adds files named like HTML (``<script>...``).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import sysconfig
import zlib
from collections.abc import Callable
from pathlib import Path

#: Packages of the standard library copied into the small (test) tree.
SMALL = ("json", "email", "html", "http", "urllib", "wsgiref", "xml")
SKIP = {"site-packages", "dist-packages", "__pycache__", "test", "idlelib", "tkinter",
        "lib2to3", "ensurepip", "config-3.11-x86_64-linux-gnu", "lib-dynload"}
#: A path, not only a name: the folder ``<script>alert(1)<`` holds ``script>``.
HOSTILE_PATH = "<script>alert(1)</script>"


def png(width: int, height: int, seed: int) -> bytes:
    """A small RGB PNG (a colour gradient), written without any imaging library."""
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")
        for x in range(width):
            row += bytes(((x * 255 // width + seed * 40) % 256, y * 255 // height,
                          (seed * 70 + 90) % 256))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                                8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def copy_stdlib(target: Path, full: bool) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    target.mkdir(parents=True)
    for item in sorted(stdlib.iterdir()):
        if item.name in SKIP or item.is_symlink():
            continue
        if item.is_dir():
            if full or item.name in SMALL:
                shutil.copytree(item, target / item.name, symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__", "test", "tests"))
        elif item.suffix == ".py" and (full or item.name < "c"):
            shutil.copy2(item, target / item.name)


def add_data(tree: Path, hostile: bool) -> None:
    data = tree / "data"
    data.mkdir(exist_ok=True)
    (data / "cats.csv").write_text("id,name,weight_kg,indoor\n" + "".join(
        f"{i},cat{i},{3 + i % 5}.{i % 10},{'yes' if i % 3 else 'no'}\n" for i in range(200)))
    (data / "labels.json").write_text(json.dumps(
        {"classes": ["cat", "dog", "bird"], "version": 2, "counts": {"cat": 120, "dog": 80}}))
    for i in range(3):
        (data / f"img{i}.png").write_bytes(png(48, 32, i))
    if hostile:
        hostile_file = tree / HOSTILE_PATH
        hostile_file.parent.mkdir(exist_ok=True)
        hostile_file.write_text("<b>not bold</b>\n")
        (tree / "<img src=x onerror=alert(2)>").mkdir(exist_ok=True)
        (tree / "<img src=x onerror=alert(2)>" / "a.txt").write_text("x\n")
        # names that sort around a folder's: "a-b" and "a.txt" come before "a/x"
        (data / "a").mkdir(exist_ok=True)
        for name in ("a/x.txt", "a/y", "a.txt", "a-b.txt", "a0", "a/.hidden", "A.txt"):
            (data / name).write_text(name + "\n")


def build(dsfs: Callable[..., str], work: Path, full: bool = False,
          hostile: bool = False) -> dict[str, str]:
    """Build the history with ``dsfs(*args) -> stdout``; returns version → id."""
    tree = work / "stdlib"
    copy_stdlib(tree, full)
    ids: dict[str, str] = {}

    def sync(version: str, *extra: str) -> None:
        out = dsfs("sync", str(tree), "-p", "demo", "-n", "stdlib", "-v", version, *extra)
        ids[version] = out.split()[-1]

    sync("1.0.0", "-t", "base", "-d", "the Python standard library")
    base_copy = work / "base"
    shutil.copytree(tree, base_copy, symlinks=True)
    (tree / "json" / "__init__.py").write_text(
        (tree / "json" / "__init__.py").read_text() + "\n# edited in 1.0.1\n")
    shutil.rmtree(tree / "wsgiref")
    add_data(tree, hostile)
    sync("1.0.1", "-t", "best", "-d", "data folder added, wsgiref removed")
    branch = work / "branch"
    shutil.copytree(base_copy, branch, symlinks=True)
    (branch / "NOTES.md").write_text("# Branch notes\n\nA branch made from 1.0.0.\n")
    out = dsfs("sync", str(branch), "-p", "demo", "-n", "stdlib", "-v", "1.0.2",
               "--parents", ids["1.0.0"], "-d", "a branch from 1.0.0")
    ids["1.0.2"] = out.split()[-1]
    (tree / "NOTES.md").write_text((branch / "NOTES.md").read_text())
    sync("1.0.3", "--parents", ids["1.0.1"], "--parents", ids["1.0.2"],
         "-d", "merge of 1.0.1 and 1.0.2")
    (tree / "data" / "cats.csv").write_text((tree / "data" / "cats.csv").read_text()
                                            + "200,cat200,4.2,yes\n")
    sync("1.0.4", "--parents", ids["1.0.3"], "-t", "latest", "-d", "one more cat")
    dsfs("delete", "--force", ids["1.0.2"])
    out = dsfs("squash", ids["1.0.4"], "-p", "demo", "-n", "stdlib", "-v", "1.0.5")
    ids["1.0.5"] = out.split()[-1]
    return ids


def main() -> None:
    import tempfile

    def dsfs(*args: str) -> str:
        exe = Path(sys.executable).with_name("dsfs")
        return subprocess.run([str(exe), "-q", *args], check=True, capture_output=True,
                              text=True, env=os.environ).stdout

    with tempfile.TemporaryDirectory() as work:
        ids = build(dsfs, Path(work), full="--full" in sys.argv, hostile="--hostile" in sys.argv)
    for version, vid in ids.items():
        print(version, vid)


if __name__ == "__main__":
    main()
