"""The ClearML table of docs/cli.md ("From ClearML Data") stays true.

For every row: each ``dsfs ...`` form names a command and options that
exist; each ``Dataset.x(...)`` form names a method (or property) with those
keyword arguments; a row that says "not supported / not yet / not needed"
gives its reason; and the row names the test that exercises it, which must
exist.  The behaviour itself is tested by the named tests.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
from pathlib import Path

import click
import pytest

from dsfs import Dataset
from dsfs_cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "cli.md"
GLOBAL = {"--store", "--cache-dir", "--quiet", "-q", "--help", "-h", "--version"}


def table_rows() -> list[tuple[str, str, str]]:
    text = DOC.read_text()
    start = text.index("<!-- clearml-table")
    end = text.index("<!-- end clearml-table -->")
    rows = []
    for line in text[start:end].splitlines()[3:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3:
            rows.append((cells[0], cells[1], cells[2]))
    return rows


ROWS = table_rows()


def options_of(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in getattr(p, "opts", [])}


def check_cli_form(form: str) -> None:
    words = form.split()[1:]
    command: click.Command = cli
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        found = command.get_command(click.Context(command), words[0])
        if found is None:
            break
        command, words = found, words[1:]
    assert command is not cli, f"{form!r}: no such command"
    for word in words:
        if word.startswith("-"):
            assert word in options_of(command) | GLOBAL, f"{form!r}: no option {word}"


def check_python_form(form: str) -> None:
    match = re.match(r"Dataset\.(\w+)(\((.*)\))?$", form)
    assert match, f"{form!r} is not Dataset.<name>(...)"
    name, call, args = match.group(1), match.group(2), match.group(3) or ""
    assert hasattr(Dataset, name), f"dsfs.Dataset has no {name}"
    if call is None:
        return
    params = inspect.signature(getattr(Dataset, name)).parameters
    for keyword in re.findall(r"(\w+)=", args):
        assert keyword in params, f"Dataset.{name} takes no {keyword}="


@functools.cache
def defined_tests() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / "tests").glob("test_*.py"):
        tree = ast.parse(path.read_text())
        found[f"tests/{path.name}"] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    return found


def test_the_table_is_there_and_covers_both_interfaces() -> None:
    assert len(ROWS) >= 50
    assert sum(r[0].startswith("`clearml-data") for r in ROWS) >= 25
    assert sum(r[0].startswith("`Dataset.") for r in ROWS) >= 25


@pytest.mark.parametrize(("clearml", "dsfs", "tested_by"), ROWS, ids=[r[0][:60] for r in ROWS])
def test_every_row_is_true_and_tested(clearml: str, dsfs: str, tested_by: str) -> None:
    assert clearml.startswith("`") and clearml.count("`") % 2 == 0
    if dsfs.startswith("not "):
        reason = dsfs.split(":", 1)
        assert len(reason) == 2 and len(reason[1].strip()) > 10, f"{dsfs!r} gives no reason"
    forms = re.findall(r"`([^`]+)`", dsfs)
    for form in forms:
        if form.startswith("dsfs "):
            check_cli_form(form)
        elif form.startswith("Dataset."):
            check_python_form(form)
    if not dsfs.startswith("not "):
        assert forms, f"{dsfs!r} names no dsfs form"
    if tested_by != "—":
        path, _sep, name = tested_by.partition("::")
        assert name in defined_tests().get(path, set()), f"no test {tested_by}"
    else:
        assert dsfs.startswith("not "), "a supported row must name its test"


def test_verify_dataset_hash_names_the_paths(tmp_path: Path, dsfs_env: dict[str, str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store = str(tmp_path / "store")
    monkeypatch.setenv("DSFS_STORE", store)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a.txt").write_text("a")
    (src / "b.txt").write_text("b")
    ds = Dataset.create(dataset_project="p", dataset_name="n")
    ds.add_files(src)
    ds.finalize()
    child = Dataset.create(dataset_project="p", dataset_name="n", parent_datasets=[ds])
    child.add_files(src / "b.txt", dataset_path="again")
    child.finalize()
    assert child.get_dependency_graph() == {child.id: [ds.id], ds.id: []}
    assert child.get_default_storage() == store and child.link_entries_dict == {}
    copy = tmp_path / "copy"
    child.get_mutable_local_copy(copy)
    assert child.verify_dataset_hash(local_copy_path=copy) == []
    (copy / "d" / "a.txt").write_text("changed")
    (copy / "b.txt").unlink()
    assert child.verify_dataset_hash(local_copy_path=copy) == ["b.txt", "d/a.txt"]
    assert child.verify_dataset_hash() == []
