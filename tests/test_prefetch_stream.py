"""``prefetch`` streamed: windows of chunk references, each deduplicated and
checked against the cache when built, and ``--dry-run``, which fetches
nothing."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from dsfs.engine import prefetch, versions
from dsfs.repository import Repository
from dsfs_cli.main import cli


def _publish(tmp_path: Path) -> Repository:
    data = tmp_path / "data"
    (data / "d").mkdir(parents=True)
    for i in range(5):
        (data / "d" / f"f{i}").write_bytes(b"same" if i < 2 else b"other %d" % i)
    (data / "top").write_bytes(b"top")
    repo = Repository.open()
    versions.sync(repo, str(data), "p", "n")
    return repo


def test_windows_skip_what_earlier_windows_fetched(dsfs_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    repo = _publish(tmp_path)
    header = repo.header(_latest(repo))
    seen = []
    for window in prefetch.windows(repo, header, (), window=2):
        seen.append((window.wanted, len(window.missing)))
        repo.cache.fetch(repo.store, window.missing)
    # 6 references: f0 and f1 share a chunk (one window), the rest distinct
    assert seen == [(2, 1), (2, 2), (2, 2)]
    assert [len(w.missing) for w in prefetch.windows(repo, header, (), window=2)] == [0, 0, 0]
    assert sum(w.wanted for w in prefetch.windows(repo, header, ["d/f3", "top"])) == 2


def _latest(repo: Repository) -> str:
    from dsfs.catalog import Catalog, Ref

    return Catalog(repo).resolve(Ref(project="p", name="n")).id


def test_dry_run_counts_and_fetches_nothing(dsfs_env: dict[str, str], tmp_path: Path) -> None:
    repo = _publish(tmp_path)
    result = CliRunner().invoke(cli, ["prefetch", "p/n", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"6 chunk\(s\) wanted, 5 not cached \(\d+ B\); nothing fetched "
                        r"\(--dry-run\)\n", result.stdout), result.stdout
    assert not any(repo.cache.has(r.chunk_id) for w in
                   prefetch.windows(repo, repo.header(_latest(repo))) for r in w.missing)
    result = CliRunner().invoke(cli, ["prefetch", "p/n"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("6 chunk(s) wanted, 5 fetched")
    result = CliRunner().invoke(cli, ["prefetch", "p/n", "--dry-run"])
    assert result.stdout.startswith("6 chunk(s) wanted, 0 not cached")
    result = CliRunner().invoke(cli, ["prefetch", "p/n", "no/such"])
    assert result.exit_code == 3, result.output
