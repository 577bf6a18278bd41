"""The CLI verbs and habits of ``clearml-data`` users (issue 13): the new
commands, parts, links, search rules, repeated options, ``--json``
everywhere, ``-q``, global options after the command, safe printing, REF
checks, shell completion and the message for a missing extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_mount_support import mounted, needs_fuse
from test_mount_support import run as run_installed

from dsfs_cli.main import cli, hoist_global_options


@pytest.fixture
def invoke(tmp_path: Path, dsfs_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DSFS_STORE", str(tmp_path / "store"))
    runner = CliRunner()

    def run(*args: str, code: int = 0, input_text: str | None = None) -> str:
        result = runner.invoke(cli, list(args), catch_exceptions=False, input=input_text)
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result.stdout if code == 0 else result.stderr

    return run


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@pytest.fixture
def versions(invoke, tmp_path: Path) -> dict[str, str]:
    src = tree(tmp_path / "src", {f"train/{c}/{i}.png": bytes([i]) * (100 + i)
                                  for c in ("cat", "dog") for i in range(6)}
               | {"labels.csv": b"a,b\n", "test/x.txt": b"x"})
    first = invoke("sync", str(src), "-p", "vision", "-n", "pets").split()[-1]
    (src / "labels.csv").write_bytes(b"a,b\nc,d\n")  # 4 -> 8 bytes
    second = invoke("sync", str(src), "-p", "vision", "-n", "pets").split()[-1]
    invoke("sync", str(src), "-p", "vision/faces", "-n", "Portraits")
    return {"first": first, "second": second, "src": str(src)}


def test_new_verbs_set_description_rename_move(invoke, versions) -> None:
    invoke("set-description", "vision/pets@1.0.0", "-d", "first cut")
    invoke("rename", "-p", "vision", "-n", "pets", "--new-name", "animals")
    invoke("get", "vision/pets", code=3)
    invoke("move", "-p", "vision", "-n", "animals", "--new-project", "zoo")
    assert invoke("lineage", "zoo/animals").startswith("zoo/animals 1.0.1")
    assert "corrupt" not in invoke("lineage", "zoo/animals")
    rows = json.loads(invoke("search", "-p", "zoo", "--json"))
    assert [(r["id"], r["name"], r["description"]) for r in rows] == [
        (versions["first"], "animals", "first cut"), (versions["second"], "animals", "")]
    invoke("move", "-p", "vision/faces", "-n", "Portraits", "--new-project", "zoo")
    assert "already exists" in invoke("rename", "-p", "zoo", "-n", "Portraits", "--new-name",
                                      "animals", code=5)
    assert "no dataset named" in invoke("rename", "-p", "zoo", "-n", "nope", "--new-name",
                                        "x", code=3)


def test_delete_entire_dataset_dry_run_and_confirmation(invoke, versions) -> None:
    listed = invoke("delete", "-p", "vision", "-n", "pets", "--entire-dataset", "--dry-run")
    assert [line.split()[2] for line in listed.splitlines()] == [versions["second"],
                                                                 versions["first"]]
    # no terminal, no --yes: refused, nothing deleted
    assert "--yes" in invoke("delete", "vision/pets", "--entire-dataset", code=2)
    assert "vision/pets" in invoke("search", "-p", "vision", "-n", "pets")
    invoke("delete", "vision/pets@1.0.0", "--entire-dataset", code=2)  # a version, not a dataset
    done = json.loads(invoke("delete", "vision/pets", "--entire-dataset", "--yes", "--json"))
    assert [r["id"] for r in done["deleted"]] == [versions["second"], versions["first"]]
    assert invoke("search", "-p", "vision", "-n", "^pets$", "--json").strip() == "[]"
    one = json.loads(invoke("delete", "vision/faces/Portraits", "--dry-run", "--json"))
    assert one["dry_run"] and len(one["deleted"]) == 1
    assert json.loads(invoke("search", "-n", "portraits", "--json"))


def test_get_parts_overwrite_and_link(invoke, versions, tmp_path: Path) -> None:
    every = []
    for k in range(3):
        listed = json.loads(invoke("list", "vision/pets", "--part", str(k), "--num-parts", "3",
                                   "--json"))
        got = json.loads(invoke("get", "vision/pets", "--part", str(k), "--num-parts", "3",
                                "--json"))
        folder = Path(got["path"])
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        assert files == sorted(r["path"] for r in listed)
        every += files
    assert sorted(every) == sorted(
        r["path"] for r in json.loads(invoke("list", "vision/pets", "--json")))
    assert "--num-parts" in invoke("get", "vision/pets", "--part", "3", "--num-parts", "3",
                                   code=2)
    assert "--num-parts" in invoke("get", "vision/pets", "--part", "0", code=2)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "old.txt").write_text("old")
    invoke("get", "vision/pets", "--copy", str(copy), code=10)
    invoke("get", "vision/pets", "--overwrite", code=2)
    invoke("get", "vision/pets", "--copy", str(copy), "--overwrite")
    assert not (copy / "old.txt").exists() and (copy / "labels.csv").read_bytes() == b"a,b\nc,d\n"
    link = tmp_path / "current"
    assert invoke("get", "vision/pets@1.0.0", "--link", str(link)).strip() == str(link)
    assert (link / "labels.csv").read_bytes() == b"a,b\n"
    invoke("get", "vision/pets", "--link", str(link))  # an earlier link is replaced
    assert (link / "labels.csv").read_bytes() == b"a,b\nc,d\n"
    invoke("get", "vision/pets", "--link", str(copy), code=10)  # not a symlink: refused


def test_search_partial_names_ids_and_subprojects(invoke, versions) -> None:
    def ids(*args: str) -> list[str]:
        return [r["name"] for r in json.loads(invoke("search", *args, "--json"))]

    assert ids("-p", "vision") == ["pets", "pets", "Portraits"]
    assert ids("-p", "vision", "--non-recursive-project-search") == ["pets", "pets"]
    assert ids("-n", "PORT") == ["Portraits"] and ids("-n", "et") == ["pets", "pets"]
    assert ids("--ids", versions["first"][:8]) == ["pets"]
    assert ids("--ids", f"{versions['first']},{versions['second']}") == ["pets", "pets"]


def test_repeated_options_keep_every_value(invoke, tmp_path: Path) -> None:
    src = tree(tmp_path / "src", {"a.txt": b"a", "b.csv": b"b", "c.bin": b"c",
                                  "train/x.bin": b"x", "val/y.bin": b"y"})
    invoke("create", "-p", "p", "-n", "n")
    invoke("add", str(src), "--wildcard", "*.txt", "--wildcard", "*.bin")
    invoke("close")
    paths = [r["path"] for r in json.loads(invoke("list", "p/n", "--json"))]
    assert paths == ["a.txt", "c.bin", "train/x.bin", "val/y.bin"]
    filtered = json.loads(invoke("list", "p/n", "--filter", "train", "--filter", "*.txt",
                                 "--json"))
    assert [r["path"] for r in filtered] == ["a.txt", "train/x.bin"]


def test_quiet_json_and_global_options_after_the_command(invoke, versions, tmp_path: Path
                                                         ) -> None:
    src = Path(versions["src"])
    (src / "new.txt").write_text("new")
    out = invoke("sync", str(src), "-p", "vision", "-n", "pets", "-q")
    assert len(out.split()) == 1 and len(out.strip()) == 32  # only the id
    other = tmp_path / "other-store"
    invoke("sync", str(src), "-p", "o", "-n", "n", "--store", str(other), "-q")
    assert [r["name"] for r in json.loads(invoke("search", "--json", "--store", str(other)))] \
        == ["n"]
    assert json.loads(invoke("search", f"--store={other}", "--json"))[0]["project"] == "o"
    assert json.loads(invoke("lineage", "vision/pets", "--json"))[0]["parents"] == [
        versions["second"]]
    assert json.loads(invoke("verify", "vision/pets", "--json"))["ok"] is True
    assert json.loads(invoke("tag", "vision/pets", "--add", "best", "--json"))["tags"] == ["best"]
    assert json.loads(invoke("gc", "--dry-run", "--json"))["dry_run"] is True
    assert json.loads(invoke("prefetch", "vision/pets", "--json"))["chunks_wanted"] >= 1
    assert json.loads(invoke("cache", "verify", "--json"))["bad"] == []
    assert "chunks" in json.loads(invoke("cache", "stats", "--json"))
    assert invoke("gc", "-q") == ""


def test_hoisting_leaves_command_arguments_alone() -> None:
    assert hoist_global_options(["get", "x", "--store", "s", "-q"]) == [
        "--store", "s", "-q", "get", "x"]
    assert hoist_global_options(["--cache-dir", "c", "add", "--", "--store"]) == [
        "--cache-dir", "c", "add", "--", "--store"]
    assert hoist_global_options(["cache", "stats", "--cache-dir=d"]) == [
        "--cache-dir=d", "cache", "stats"]


def test_diff_shows_the_exact_size_change(invoke, versions) -> None:
    out = invoke("diff", "vision/pets@1.0.0", "vision/pets@1.0.1")
    assert "M labels.csv  (4 B -> 8 B, +4 B)" in out
    assert json.loads(invoke("diff", "vision/pets@1.0.0", "vision/pets@1.0.1", "--json")) == {
        "added": [], "removed": [], "modified": ["labels.csv"]}


def test_names_with_newlines_are_printed_escaped(invoke, tmp_path: Path) -> None:
    src = tree(tmp_path / "src", {"evil\nname.txt": b"x", "ok.txt": b"y"})
    invoke("sync", str(src), "-p", "p", "-n", "n")
    lines = invoke("list", "p/n").splitlines()
    assert len(lines) == 2 and lines[0].endswith("evil\\nname.txt")
    assert json.loads(invoke("list", "p/n", "--json"))[0]["path"] == "evil\nname.txt"


@pytest.mark.parametrize(("args", "text"), [
    (["get", "p/n@"], "names no version"),
    (["get", "p/n@1.0.0#best"], "not both"),
    (["get", "p/n#"], "names no tag"),
    (["create", "-p", "p", "-n", "a/b"], "may not contain '/'"),
    (["create", "-p", "p#x", "-n", "n"], "may not contain '#'"),
    (["create", "-p", "p", "-n", "n", "-t", "a@b"], "may not contain '@'"),
])
def test_refs_that_no_word_can_reach_are_refused(invoke, args: list[str], text: str) -> None:
    assert text in invoke(*args, code=2)


def test_help_lines_are_never_cut(invoke) -> None:
    text = invoke("--help")
    commands = text[text.index("Commands:"):text.index("Exit codes:")]
    assert "..." not in commands
    assert "..." not in invoke("cache", "--help").split("Commands:")[1]
    assert "Add files or folders to a draft (a folder's contents, not the folder itself)." \
        in " ".join(text.split())


def test_completion_scripts_and_ref_words(invoke, versions, dsfs_env: dict[str, str],
                                          tmp_path: Path) -> None:
    for shell, marker in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete")):
        assert marker in invoke("completion", shell)
    env = {**os.environ, **dsfs_env, "DSFS_STORE": str(tmp_path / "store"),
           "_DSFS_COMPLETE": "bash_complete", "COMP_WORDS": "dsfs get vision/pe",
           "COMP_CWORD": "2"}
    done = subprocess.run([sys.executable, "-m", "dsfs"], env=env, capture_output=True,
                          text=True, timeout=120)
    words = {line.split(",", 1)[1] for line in done.stdout.splitlines() if "," in line}
    assert {"vision/pets", "vision/pets@1.0.0", "vision/pets@1.0.1"} <= words, done


def test_a_missing_extra_is_named(run_dsfs, tmp_path: Path, dsfs_env: dict[str, str]) -> None:
    """pyfuse3 made unimportable (as if the mount extra were not installed)."""
    fake = tmp_path / "no-extras" / "pyfuse3"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pyfuse3'\", name='pyfuse3')\n")
    env = {**os.environ, **dsfs_env,
           "PYTHONPATH": f"{fake.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run([sys.executable, "-m", "dsfs", "mount", "0123abcd", str(mnt)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 12, done.stderr
    assert "'mount' extra" in done.stderr and "pip install 'dsfs[mount]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_clearml_data_session_with_dsfs_words(invoke, tmp_path: Path) -> None:
    """The steps of clearml-data's documented workflow, spelled the dsfs way:
    create, add, upload, close; then list, get, verify, set-description,
    compare (diff), delete by --id."""
    src = tree(tmp_path / "data", {"a/1.jpg": b"1" * 50, "a/2.json": b"{}", "b/3.jpg": b"3"})
    draft = invoke("create", "--project", "ex", "--name", "ds", "--version", "2.0.0",
                   "--tags", "raw").split()[-1]
    invoke("add", str(src / "a"), "--dataset-folder", "imgs", "--wildcard", "*.jpg",
           "--non-recursive")
    invoke("add", str(src / "b"), "--dataset-folder", "imgs", "--id", draft[:8])
    assert invoke("upload", "--id", draft) == ""  # the summary goes to stderr
    assert invoke("close", "--id", draft).split()[-1] == draft
    rows = json.loads(invoke("list", "--id", draft, "--filter", "imgs", "--json"))
    assert [r["path"] for r in rows] == ["imgs/1.jpg", "imgs/3.jpg"]
    assert [r["path"] for r in json.loads(invoke("list", "-p", "ex", "-n", "ds", "-v", "2.0.0",
                                                 "--modified", "--json"))] == [
        "imgs/1.jpg", "imgs/3.jpg"]
    copy = tmp_path / "copy"
    invoke("get", "--id", draft, "--copy", str(copy))
    assert json.loads(invoke("verify", "--id", draft, "--folder", str(copy), "--json"))["ok"]
    invoke("set-description", "--id", draft, "--description", "two images")
    child = invoke("sync", str(src), "-p", "ex", "-n", "ds", "--parents", draft).split()[-1]
    assert json.loads(invoke("diff", draft, child, "--json"))["added"] == ["a/1.jpg", "a/2.json",
                                                                          "b/3.jpg"]
    assert json.loads(invoke("search", "--ids", draft, "--json"))[0]["description"] == \
        "two images"
    invoke("delete", "--id", child)
    invoke("delete", "--id", draft, "--force")
    assert json.loads(invoke("search", "-p", "ex", "--json")) == []


def test_mounting_over_files_warns(run_dsfs, tmp_path: Path, dsfs_env: dict[str, str]) -> None:
    """The warning comes before anything is mounted (here the version does
    not exist, so nothing is)."""
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("x")
    env = {**os.environ, **dsfs_env, "DSFS_STORE": str(tmp_path / "store")}
    done = subprocess.run([sys.executable, "-m", "dsfs", "mount", "0123abcd", str(full)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert f"dsfs: warning: {full} is not empty" in done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "dsfs", "mount", "0123abcd", str(empty)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and "warning" not in done.stderr, done.stderr


@needs_fuse
def test_an_empty_overlay_follows_its_mount_point_to_another_store(
        tmp_path: Path, dsfs_env: dict[str, str]) -> None:
    src = tree(tmp_path / "src", {"a.txt": b"a"})
    env_a = {**dsfs_env, "DSFS_STORE": str(tmp_path / "store-a")}
    env_b = {**dsfs_env, "DSFS_STORE": str(tmp_path / "store-b")}
    run_installed(env_a, "sync", str(src), "-p", "p", "-n", "n", check=True)
    run_installed(env_b, "sync", str(src), "-p", "q", "-n", "m", check=True)
    mnt = tmp_path / "mnt"
    with mounted(env_a, "p/n", mnt, "--writable"):
        (mnt / "new.txt").write_text("new")
        run_installed(env_a, "commit", str(mnt), "-m", "x", check=True)
    with mounted(env_b, "q/m", mnt, "--writable"):  # the overlay is empty: it follows
        assert (mnt / "a.txt").read_text() == "a" and not (mnt / "new.txt").exists()
        (mnt / "b.txt").write_text("b")
    # now it holds edits of store b's version: store a's is refused
    done = run_installed(env_a, "mount", "--writable", "p/n", str(mnt))
    assert done.returncode == 5 and "another store" in done.stderr, done.stderr


def test_commands_that_make_versions_print_json(invoke, tmp_path: Path) -> None:
    src = tree(tmp_path / "src", {"a.txt": b"aaaa", "b/c.txt": b"c"})
    draft = json.loads(invoke("create", "-p", "j", "-n", "s", "--json"))
    assert draft["status"] == "draft" and draft["version"] == "1.0.0"
    assert json.loads(invoke("add", str(src), "--json")) == {"draft": draft["id"], "added": 2}
    closed = json.loads(invoke("close", "--json"))
    assert (closed["id"], closed["added"], closed["files"], closed["size"]) == (
        draft["id"], 2, 2, 5)
    (src / "a.txt").write_bytes(b"changed")
    synced = json.loads(invoke("sync", str(src), "-p", "j", "-n", "s", "--json"))
    assert synced["created"] and synced["modified"] == 1 and synced["version"] == "1.0.1"
    same = json.loads(invoke("sync", str(src), "-p", "j", "-n", "s", "--json"))
    assert not same["created"] and same["id"] == synced["id"]
    flat = json.loads(invoke("squash", "j/s", "-p", "j", "-n", "flat", "--json"))
    assert flat["files"] == 2 and flat["version"] == "1.0.0"
    assert json.loads(invoke("cache", "prune", "--size", "1G", "--json"))["chunks_removed"] == 0
    assert "manifests_removed" in json.loads(invoke("cache", "clear", "--json"))
