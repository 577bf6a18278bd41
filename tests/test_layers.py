"""The import-layer contract: every module imports only from its own layer or below.

The layers are the house of ``docs/design.md``: the CLI calls the engine, the
mount lifecycle calls the FUSE adapters, the adapters call the overlay, the
content reader and the vfs, the vfs calls the cache and the catalog, the cache
calls the store.  A module that imports upward (even inside a function, to
dodge an import cycle) fails this test, which names the file, the line and
both layers.

Third-party libraries are held to their one owner as well (``boto3`` in the S3
store, ``lmdb`` in the cache's environment module, ``pyfuse3`` in the FUSE
adapter's base).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Lowest first.  A module may import any module of its own rank or a lower one.
LAYERS: list[tuple[str, ...]] = [
    ("dsfs.errors", "dsfs.config", "dsfs.fsutil", "dsfs.report", "dsfs.logutil", "dsfs.chore",
     "dsfs.flight"),
    ("dsfs.format",),
    ("dsfs.store",),
    ("dsfs.cache",),
    ("dsfs.repository",),
    ("dsfs.catalog", "dsfs.refs"),
    ("dsfs.engine",),
    ("dsfs.dataset", "dsfs.dataset_store", "dsfs.pyargs", "dsfs.shard", "dsfs.vfs"),
    ("dsfs.content",),
    ("dsfs.overlay",),
    ("dsfs.fuse",),
    ("dsfs.mount", "dsfs.fsspec"),
    ("dsfs.ui",),
    ("dsfs", "dsfs.__main__", "dsfs_cli"),
]

#: Third-party modules and the only packages allowed to import them.
OWNERS: dict[str, tuple[str, ...]] = {
    "boto3": ("dsfs.store.s3",),
    "botocore": ("dsfs.store.s3",),
    "lmdb": ("dsfs.cache.lmdbenv",),
    "pyfuse3": ("dsfs.fuse.adapter",),
    "click": ("dsfs_cli",),
    "fsspec": ("dsfs.fsspec.filesystem",),
    "jinja2": ("dsfs.ui.render",),
}


def rank(module: str) -> int | None:
    """The layer of a dsfs module: the longest matching prefix wins."""
    best: tuple[int, int] | None = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "cli":
        parts[0] = "dsfs_cli"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, nested ones too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in ("dsfs", "dsfs_cli"):
                # "from dsfs import catalog" imports the module it names
                found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, node.module))
    return found


SOURCES = sorted([*ROOT.joinpath("dsfs").rglob("*.py"), *ROOT.joinpath("cli").rglob("*.py")])


def test_the_layer_table_covers_every_module() -> None:
    unranked = [module_name(p) for p in SOURCES if rank(module_name(p)) is None]
    assert not unranked, f"add these modules to LAYERS in {__file__}: {unranked}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_call_down(path: Path) -> None:
    me = module_name(path)
    my_rank = rank(me)
    assert my_rank is not None
    upward = []
    for line, target in imports(path):
        if not (target == "dsfs" or target.startswith(("dsfs.", "dsfs_cli"))):
            continue
        target_rank = rank(target)
        if target_rank is not None and target_rank > my_rank:
            upward.append(f"{path.relative_to(ROOT)}:{line} imports {target} "
                          f"(layer {target_rank} above {me}'s {my_rank})")
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_third_party_libraries_have_one_owner(path: Path) -> None:
    me = module_name(path)
    strays = []
    for line, target in imports(path):
        top = target.split(".")[0]
        owners = OWNERS.get(top)
        if owners and not any(me == o or me.startswith(o + ".") for o in owners):
            strays.append(f"{path.relative_to(ROOT)}:{line} imports {top}, owned by {owners}")
    assert not strays, "\n".join(strays)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The contract can fail: an upward import in a scratch module is found."""
    scratch = tmp_path / "scratch.py"
    scratch.write_text("def f():\n    from dsfs.mount.table import state_key\n")
    assert (2, "dsfs.mount.table") in imports(scratch)
    assert rank("dsfs.mount.table") > rank("dsfs.overlay.upper")  # type: ignore[operator]
