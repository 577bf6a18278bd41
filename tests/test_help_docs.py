"""docs/cli.md shows every command's ``--help`` exactly as ``dsfs`` prints it.

Each command (``cache`` subcommands too) must have a block in docs/cli.md::

    ```
    $ dsfs COMMAND --help
    <the output, at 80 columns>
    ```

and the block must equal what the command prints.  After changing a
command, refresh the blocks with ``python tests/test_help_docs.py --write``
(it also lists commands that have no block yet: add a section for them).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dsfs_cli.main import cli

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
BLOCK = re.compile(r"```\n\$ (dsfs(?: [a-z-]+)*) --help\n(.*?)```", re.DOTALL)


def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ()
                  ) -> list[tuple[str, ...]]:
    """Every command as the words after ``dsfs``: ``()`` for dsfs itself."""
    found = [prefix]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        if isinstance(command, click.Group):
            found += command_paths(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


def help_text(words: tuple[str, ...]) -> str:
    result = CliRunner().invoke(cli, [*words, "--help"], prog_name="dsfs", terminal_width=80,
                                env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.stdout


def doc_blocks(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in BLOCK.finditer(text)}


@pytest.mark.parametrize("words", command_paths(), ids=lambda w: " ".join(w) or "dsfs")
def test_docs_show_the_help_of_every_command(words: tuple[str, ...]) -> None:
    blocks = doc_blocks(DOC.read_text())
    name = " ".join(("dsfs", *words))
    assert name in blocks, f"docs/cli.md has no `$ {name} --help` block"
    assert blocks[name] == help_text(words), (
        f"docs/cli.md shows an old `{name} --help`: run python tests/test_help_docs.py --write")


def write() -> None:
    text = DOC.read_text()
    helps = {" ".join(("dsfs", *w)): help_text(w) for w in command_paths()}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"```\n$ {name} --help\n{helps.get(name, match.group(2))}```"

    DOC.write_text(BLOCK.sub(replace, text))
    missing = sorted(set(helps) - set(doc_blocks(text)))
    for name in missing:
        print(f"no block yet: {name}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        sys.exit("usage: python tests/test_help_docs.py --write")
