"""CLI tests: click's runner for the commands, and the installed ``dsfs`` as a
real subprocess for exit codes and the no-traceback promise."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_tree

from dsfs_cli.main import cli


@pytest.fixture
def invoke(store_url: str):
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output + (result.stderr or "")
        return result.stdout

    return run


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_create_add_close_prints_id_last(invoke, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, files=10)
    draft_id = last_line(invoke("create", "--project", "p", "--name", "n", "--tags", "a,b"))
    assert len(draft_id) == 32
    assert "added 10 file(s)" in invoke("add", str(src))
    search = json.loads(invoke("search", "--json"))
    assert search[0]["status"] == "draft"
    version_id = last_line(invoke("close"))
    assert version_id == draft_id
    rows = json.loads(invoke("search", "--project", "p", "--json"))
    assert [(r["id"], r["status"], r["version"], r["tags"], r["files"]) for r in rows] == [
        (version_id, "final", "1.0.0", ["a", "b"], 10)]
    assert last_line(invoke("get", version_id[:8])).endswith(version_id)


def test_add_options(invoke, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "b.csv").write_text("b")
    (src / "sub" / "c.txt").write_text("c")
    invoke("create", "-p", "p", "-n", "n")
    invoke("add", str(src), "--wildcard", "*.txt", "--non-recursive",
           "--dataset-folder", "data")
    invoke("close")
    listed = json.loads(invoke("list", "-p", "p", "-n", "n", "--json"))
    assert [r["path"] for r in listed] == ["data/a.txt"]


def test_sync_list_diff_lineage_verify(invoke, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src, files=12)
    v1 = last_line(invoke("sync", str(src), "-p", "p", "-n", "n"))
    some = sorted(files)
    (src / some[0]).write_bytes(b"modified!")
    (src / some[1]).unlink()
    (src / "added.txt").write_text("new")
    out = invoke("sync", str(src), "-p", "p", "-n", "n")
    assert "1 added, 1 modified, 1 removed" in out
    v2 = last_line(out)
    assert "no changes" in invoke("sync", str(src), "-p", "p", "-n", "n")
    diff = json.loads(invoke("diff", v1, v2, "--json"))
    assert diff == {"added": ["added.txt"], "removed": [some[1]], "modified": [some[0]]}
    modified = json.loads(invoke("list", v2, "--modified", "--json"))
    assert {(r["path"], r["change"]) for r in modified} == {
        ("added.txt", "added"), (some[1], "removed"), (some[0], "modified")}
    assert json.loads(invoke("list", v2, "--filter", "added*", "--json"))[0]["path"] == "added.txt"
    lineage = invoke("lineage", "p/n")
    lines = lineage.strip().splitlines()
    assert v2[:12] in lines[0] and "+1 -1 ~1" in lines[0]
    assert v1[:12] in lines[1] and lines[1].startswith("└── ") and "+12 -0 ~0" in lines[1]
    invoke("verify", "p/n@1.0.1")
    invoke("verify", "p/n", "--folder", str(src))
    (src / "added.txt").write_text("drifted")
    assert "added.txt: content differs" in invoke("verify", "p/n", "--folder", str(src), code=6)


def test_tag_delete_gc_squash(invoke, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, files=5)
    v1 = last_line(invoke("sync", str(src), "-p", "p", "-n", "n"))
    (src / "x").write_text("x")
    v2 = last_line(invoke("sync", str(src), "-p", "p", "-n", "n"))
    assert "best" in invoke("tag", v1, "--add", "best")
    assert last_line(invoke("get", "p/n#best")).endswith(v1)
    assert "(no tags)" in invoke("tag", "-p", "p", "-n", "n", "-t", "best", "--remove", "best")
    squashed = last_line(invoke("squash", v1, v2, "-p", "p", "-n", "flat"))
    assert json.loads(invoke("list", squashed, "--json")) == json.loads(
        invoke("list", v2, "--json"))
    invoke("delete", v1, code=5)
    invoke("delete", v2)
    assert "gc" in invoke("delete", v1)
    assert "removed 0 pack(s)" in invoke("gc")  # everything is younger than 24h
    assert "pack(s)" in invoke("gc", "--grace", "0s", "--dry-run")


def test_mutable_copy_into_nonempty_dir_refused(invoke, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, files=3)
    version = last_line(invoke("sync", str(src), "-p", "p", "-n", "n"))
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    invoke("get", version, "--copy", str(target), code=10)
    assert (target / "keep.txt").read_text() == "mine"
    fresh = tmp_path / "fresh"
    invoke("get", version, "--copy", str(fresh))
    assert len(list(fresh.rglob("*.bin"))) == 3


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["get", "0" * 32], 3, "no version with id"),
        (["get", "-p", "p", "-n", "none"], 3, "no dataset named"),
        (["get", "not-an-id"], 2, "neither a version id"),
        (["get"], 2, "name a version"),
        (["add", "/definitely/not/here"], 3, "no current draft"),
        (["close"], 3, "no current draft"),
        (["gc", "--grace", "soon"], 2, "cannot read duration"),
        (["diff", "ffff", "eeee"], 3, "no version with id"),
        (["--store", "ftp://host/x", "search"], 2, "unknown store scheme"),
    ],
)
def test_errors_are_one_line_with_exit_code(run_dsfs, store_url: str, args: list[str],
                                            code: int, needle: str) -> None:
    result = run_dsfs(*args)
    assert result.returncode == code, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_add_missing_path_subprocess(run_dsfs, store_url: str) -> None:
    run_dsfs("create", "-p", "p", "-n", "n", check=True)
    result = run_dsfs("add", "/definitely/not/here")
    assert result.returncode == 10 and "no such file" in result.stderr


def test_installed_entry_points(run_dsfs, store_url: str, tmp_path: Path) -> None:
    assert "Usage" in run_dsfs("--help", check=True).stdout
    src = tmp_path / "src"
    make_tree(src, files=4)
    out = run_dsfs("sync", str(src), "-p", "p", "-n", "n", check=True).stdout
    version_id = last_line(out)
    path = last_line(run_dsfs("get", version_id, check=True).stdout)
    assert len(os.listdir(path)) > 0
    import subprocess
    import sys

    module = subprocess.run([sys.executable, "-m", "dsfs", "--version"], capture_output=True,
                            text=True)
    assert module.returncode == 0 and "dsfs" in module.stdout


def test_default_embedded_store(dsfs_env: dict[str, str], tmp_path: Path) -> None:
    """With no --store and no DSFS_STORE, data lands under the data directory."""
    src = tmp_path / "src"
    make_tree(src, files=2)
    result = CliRunner().invoke(cli, ["sync", str(src), "-p", "p", "-n", "n"])
    assert result.exit_code == 0, result.output
    assert (Path(dsfs_env["DSFS_DATA_DIR"]) / "store" / "config").exists()
