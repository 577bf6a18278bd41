"""The claim is the commit point, and a manifest header that disagrees with its
claim is corruption, not a missing version (issue 9).

Every test edits the store behind dsfs's back, as bit rot or a careless hand
would, and then drives the installed ``dsfs`` as a subprocess: on the local
store (the object is a file) and on S3 (moto's server, the object rewritten
with a plain boto3 client).  Nothing here mocks the catalog or the store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import make_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsfs.catalog import Catalog, Ref
from dsfs.errors import FormatVersionError, IntegrityError
from dsfs.format import manifest as mf
from dsfs.repository import Repository
from dsfs.store import open_store

INTEGRITY = 6


# -- behind the store's back ---------------------------------------------------------


def _s3_location(store_url: str, key: str) -> tuple[str, str]:
    bucket, _, prefix = store_url[len("s3://"):].partition("/")
    return bucket, f"{prefix.rstrip('/')}/{key}" if prefix else key


def read_object(store_url: str, key: str) -> bytes:
    if store_url.startswith("s3://"):
        from s3_support import make_client

        bucket, full = _s3_location(store_url, key)
        client = make_client()
        try:
            return client.get_object(Bucket=bucket, Key=full)["Body"].read()
        finally:
            client.close()
    return Path(store_url, key).read_bytes()


def write_object(store_url: str, key: str, data: bytes) -> None:
    """Rewrite an object in place (a local file keeps its inode, as an editor
    that writes in place would leave it)."""
    if store_url.startswith("s3://"):
        from s3_support import make_client

        bucket, full = _s3_location(store_url, key)
        client = make_client()
        try:
            client.put_object(Bucket=bucket, Key=full, Body=data)
        finally:
            client.close()
        return
    with open(Path(store_url, key), "r+b") as f:
        f.write(data)
        f.truncate()


def delete_object(store_url: str, key: str) -> None:
    if store_url.startswith("s3://"):
        from s3_support import make_client

        bucket, full = _s3_location(store_url, key)
        client = make_client()
        try:
            client.delete_object(Bucket=bucket, Key=full)
        finally:
            client.close()
        return
    Path(store_url, key).unlink()


def object_exists(store_url: str, key: str) -> bool:
    try:
        read_object(store_url, key)
    except FileNotFoundError:
        return False
    except Exception as exc:  # botocore's NoSuchKey
        if "NoSuchKey" in type(exc).__name__ or "NoSuchKey" in str(exc):
            return False
        raise
    return True


def edit_version_string(data: bytes, old: str, new: str) -> bytes:
    """The manifest with its header's version string changed (same length, so
    the header stays valid JSON of the same size)."""
    assert len(old) == len(new)
    needle = f'"version": "{old}"'.encode()
    assert data.count(needle) == 1
    return data.replace(needle, f'"version": "{new}"'.encode())


def break_json(data: bytes) -> bytes:
    """The manifest with the first byte of its JSON header overwritten."""
    start = mf.PREFIX_SIZE
    assert data[start:start + 1] == b"{"
    return data[:start] + b"#" + data[start + 1:]


# -- a small store -----------------------------------------------------------------


def sync(run_dsfs, folder: Path, dataset: str, *options: str) -> str:
    project, name = dataset.split("/")
    result = run_dsfs(*options, "sync", str(folder), "-p", project, "-n", name, check=True)
    return result.stdout.strip().splitlines()[-1]


#: One store of three versions per backend, built once and copied into each
#: test's fresh store (building it costs three `dsfs sync`s).
_TEMPLATES: dict[str, tuple[str, dict[str, str]]] = {}


def _copy_store(source_url: str, target_url: str) -> None:
    if not source_url.startswith("s3://"):
        shutil.copytree(source_url, target_url)
        return
    from s3_support import make_client

    src_bucket, src_prefix = _s3_location(source_url, "")
    dst_bucket, dst_prefix = _s3_location(target_url, "")
    client = make_client()
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=src_bucket,
                                                                     Prefix=src_prefix):
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(src_prefix):]
                client.copy_object(Bucket=dst_bucket, Key=dst_prefix + rest,
                                   CopySource={"Bucket": src_bucket, "Key": obj["Key"]})
    finally:
        client.close()


@pytest.fixture
def three_versions(run_dsfs, store_url: str, tmp_path_factory: pytest.TempPathFactory
                   ) -> dict[str, str]:
    """proj/a 1.0.0, and proj/b 1.0.0 with its child proj/b 1.0.1."""
    kind = "s3" if store_url.startswith("s3://") else "local"
    if kind not in _TEMPLATES:
        root = tmp_path_factory.mktemp("template")
        if kind == "s3":
            from s3_support import make_client, new_bucket

            client = make_client()
            template_url = f"s3://{new_bucket(client)}/store"
            client.close()
        else:
            template_url = str(root / "store")
        a, b = root / "a", root / "b"
        make_tree(a, files=5, seed=1)
        make_tree(b, files=6, seed=2)

        def sync_into(folder: Path, dataset: str) -> str:
            # its own cache: every test starts with a cold one
            return sync(run_dsfs, folder, dataset, "--store", template_url,
                        "--cache-dir", str(root / "cache"))

        ids = {"a": sync_into(a, "proj/a"), "b0": sync_into(b, "proj/b")}
        (b / "new.txt").write_text("only in 1.0.1")
        ids["b1"] = sync_into(b, "proj/b")
        assert len(set(ids.values())) == 3
        _TEMPLATES[kind] = (template_url, ids)
    template_url, ids = _TEMPLATES[kind]
    _copy_store(template_url, store_url)
    return dict(ids)


def manifest_key(version_id: str) -> str:
    return f"versions/{version_id}"


def search_rows(run_dsfs) -> tuple[list[tuple[str, str, str]], subprocess.CompletedProcess]:
    result = run_dsfs("search", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    return sorted((r["project"] + "/" + r["name"], r["version"], r["id"]) for r in rows), result


def assert_corrupt(result: subprocess.CompletedProcess, version_id: str) -> None:
    assert result.returncode == INTEGRITY, (result.returncode, result.stdout, result.stderr)
    assert f"versions/{version_id}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


CORRUPTIONS = {
    "version-edited": lambda data: edit_version_string(data, "1.0.1", "1.0.7"),
    "not-json": break_json,
}


# -- the tests ---------------------------------------------------------------------


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_header_is_reported_by_commands_that_address_it(
        run_dsfs, store_url: str, three_versions: dict[str, str], corruption: str,
        tmp_path: Path) -> None:
    b1 = three_versions["b1"]
    key = manifest_key(b1)
    write_object(store_url, key, CORRUPTIONS[corruption](read_object(store_url, key)))
    for args in (["list", "proj/b@1.0.1"], ["list", "proj/b"], ["list", b1], ["list", b1[:10]],
                 ["verify", "proj/b@1.0.1"], ["get", "proj/b"], ["lineage", "proj/b@1.0.1"],
                 ["prefetch", "proj/b"], ["diff", "proj/b@1.0.0", "proj/b@1.0.1"]):
        assert_corrupt(run_dsfs(*args), b1)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    mounted = run_dsfs("mount", "proj/b", str(mountpoint))
    if mounted.returncode == 0:  # the defect is back: do not leave the mount behind
        run_dsfs("umount", str(mountpoint))
    assert_corrupt(mounted, b1)
    # the other versions stay readable
    assert run_dsfs("list", "proj/b@1.0.0").returncode == 0
    assert run_dsfs("verify", "proj/a").returncode == 0


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_search_lists_the_rest_and_names_the_corrupt_object(
        run_dsfs, store_url: str, three_versions: dict[str, str], corruption: str) -> None:
    b1 = three_versions["b1"]
    key = manifest_key(b1)
    write_object(store_url, key, CORRUPTIONS[corruption](read_object(store_url, key)))
    rows, result = search_rows(run_dsfs)
    assert rows == sorted([("proj/a", "1.0.0", three_versions["a"]),
                           ("proj/b", "1.0.0", three_versions["b0"])])
    assert f"versions/{b1}" in result.stderr and "corrupt" in result.stderr
    table = run_dsfs("search")
    assert table.returncode == 0 and three_versions["a"] in table.stdout
    assert f"versions/{b1}" in table.stderr


def test_a_malformed_tags_object_hides_nothing_else(
        run_dsfs, store_url: str, three_versions: dict[str, str]) -> None:
    b1 = three_versions["b1"]
    assert run_dsfs("tag", "proj/b@1.0.1", "--add", "gold").returncode == 0
    write_object(store_url, f"tags/{b1}", b"{not json")
    rows, result = search_rows(run_dsfs)
    assert sorted(r[2] for r in rows) == sorted([three_versions["a"], three_versions["b0"]])
    assert f"tags/{b1}" in result.stderr
    listed = run_dsfs("list", "proj/b@1.0.1")
    assert listed.returncode == INTEGRITY and f"tags/{b1}" in listed.stderr, listed.stderr


def test_gc_never_collects_a_claimed_version(run_dsfs, store_url: str,
                                             three_versions: dict[str, str]) -> None:
    """A claimed manifest whose header lies about its version string is not an
    unpublished leftover: gc neither counts nor removes it (nor its packs)."""
    b1 = three_versions["b1"]
    key = manifest_key(b1)
    good = read_object(store_url, key)
    write_object(store_url, key, edit_version_string(good, "1.0.1", "1.0.7"))
    dry = run_dsfs("gc", "--dry-run", "--grace", "0")
    assert dry.returncode == 0, dry.stderr
    assert "0 unpublished manifest(s)" in dry.stdout, dry.stdout
    assert "would remove 0 pack(s)" in dry.stdout, dry.stdout
    real = run_dsfs("gc", "--grace", "0")
    assert real.returncode == 0, real.stderr
    assert "removed 0 pack(s)" in real.stdout and "0 unpublished manifest(s)" in real.stdout
    assert object_exists(store_url, key)
    write_object(store_url, key, good)  # repaired: every byte of it is still there
    check = run_dsfs("verify", "proj/b@1.0.1")
    assert check.returncode == 0, check.stderr


def test_gc_reads_a_repaired_header_not_its_stale_cached_copy(
        run_dsfs, store_url: str, three_versions: dict[str, str]) -> None:
    """proj/b 1.0.0 is deleted but kept as the parent of 1.0.1.  1.0.1's header
    is damaged (its parent id now names proj/a), read into the cache, then
    repaired: gc must judge by the repaired header and keep 1.0.0."""
    a, b0, b1 = three_versions["a"], three_versions["b0"], three_versions["b1"]
    hidden = run_dsfs("delete", "--force", "proj/b@1.0.0")
    assert hidden.returncode == 0 and "hid" in hidden.stdout, hidden.stdout + hidden.stderr
    key = manifest_key(b1)
    good = read_object(store_url, key)
    assert good.count(b0.encode()) == 1
    write_object(store_url, key, good.replace(b0.encode(), a.encode()))
    run_dsfs("list", "proj/b@1.0.1")  # reads (and caches) the damaged header
    write_object(store_url, key, good)
    result = run_dsfs("gc", "--grace", "0")
    assert result.returncode == 0, result.stderr
    assert object_exists(store_url, manifest_key(b0)), result.stdout
    check = run_dsfs("verify", "proj/b@1.0.1")
    assert check.returncode == 0, check.stdout + check.stderr


def test_gc_keeps_a_manifest_whose_header_is_unreadable(
        run_dsfs, store_url: str, three_versions: dict[str, str]) -> None:
    """With a header it cannot parse, gc cannot tell which parents the version
    needs: it keeps that manifest and every pack its entries use, removes no
    manifest, and names the object."""
    b1 = three_versions["b1"]
    key = manifest_key(b1)
    good = read_object(store_url, key)
    write_object(store_url, key, break_json(good))
    for args in (["gc", "--dry-run", "--grace", "0"], ["gc", "--grace", "0"]):
        result = run_dsfs(*args)
        assert result.returncode == 0, result.stderr
        assert "0 pack(s)" in result.stdout and "0 unpublished manifest(s)" in result.stdout
        assert b1 in result.stderr, result.stderr
    assert object_exists(store_url, key)
    write_object(store_url, key, good)
    assert run_dsfs("verify", "proj/b@1.0.1").returncode == 0
    assert run_dsfs("verify", "proj/b@1.0.0").returncode == 0


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_delete_keeps_the_parent_of_a_corrupt_claimed_child(
        run_dsfs, store_url: str, three_versions: dict[str, str], corruption: str) -> None:
    """The child is claimed, so it depends on its parent even though its header
    no longer matches its claim (delete refuses: 5), or cannot be read (nobody
    can tell what it builds on: 6, naming it)."""
    b0, b1 = three_versions["b0"], three_versions["b1"]
    key = manifest_key(b1)
    good = read_object(store_url, key)
    write_object(store_url, key, CORRUPTIONS[corruption](good))
    result = run_dsfs("delete", "proj/b@1.0.0")
    if corruption == "not-json":
        assert_corrupt(result, b1)
    else:
        assert result.returncode == 5, (result.stdout, result.stderr)
    assert object_exists(store_url, manifest_key(b0))
    write_object(store_url, key, good)
    assert run_dsfs("verify", "proj/b@1.0.1").returncode == 0


def test_lineage_marks_a_corrupt_ancestor_instead_of_calling_it_deleted(
        run_dsfs, store_url: str, three_versions: dict[str, str]) -> None:
    b0 = three_versions["b0"]
    key = manifest_key(b0)
    write_object(store_url, key, edit_version_string(read_object(store_url, key), "1.0.0", "1.0.7"))
    result = run_dsfs("lineage", "proj/b@1.0.1")
    assert result.returncode == 0, result.stderr
    parent_line = next(line for line in result.stdout.splitlines() if b0[:12] in line)
    assert "corrupt" in parent_line and "deleted" not in parent_line, result.stdout


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_repaired_store_is_seen_without_clearing_the_cache(
        run_dsfs, store_url: str, three_versions: dict[str, str], corruption: str) -> None:
    b1 = three_versions["b1"]
    key = manifest_key(b1)
    good = read_object(store_url, key)
    write_object(store_url, key, CORRUPTIONS[corruption](good))
    # read the bad header (and let the cache keep whatever it keeps)
    assert_corrupt(run_dsfs("list", "proj/b@1.0.1"), b1)
    search_rows(run_dsfs)
    assert run_dsfs("cache", "verify").returncode == 0
    write_object(store_url, key, good)
    rows, _ = search_rows(run_dsfs)
    assert ("proj/b", "1.0.1", b1) in rows
    for args in (["list", "proj/b@1.0.1"], ["list", b1], ["verify", "proj/b"]):
        result = run_dsfs(*args)
        assert result.returncode == 0, (args, result.stderr)


@pytest.mark.parametrize("unstamped", [False, True], ids=["stamped", "unstamped"])
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_cached_good_header_does_not_hide_corruption(
        run_dsfs, store_url: str, dsfs_env: dict[str, str], three_versions: dict[str, str],
        corruption: str, unstamped: bool) -> None:
    """Also for a cache filled by an older dsfs, which recorded no stamps."""
    b1 = three_versions["b1"]
    key = manifest_key(b1)
    assert run_dsfs("list", "proj/b@1.0.1").returncode == 0  # cached whole
    if unstamped:
        stamps = [p for p in cached_manifest_files(dsfs_env) if p.suffix == ".stamp"]
        assert stamps
        for stamp in stamps:
            stamp.unlink()
    write_object(store_url, key, CORRUPTIONS[corruption](read_object(store_url, key)))
    assert_corrupt(run_dsfs("list", "proj/b@1.0.1"), b1)
    _rows, result = search_rows(run_dsfs)
    assert f"versions/{b1}" in result.stderr


def cached_manifest_files(env: dict[str, str]) -> list[Path]:
    root = Path(env["DSFS_CACHE_DIR"], "manifests")
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_cache_clear_drops_cached_headers(run_dsfs, store_url: str, dsfs_env: dict[str, str],
                                          three_versions: dict[str, str]) -> None:
    assert run_dsfs("list", "proj/b@1.0.1").returncode == 0
    search_rows(run_dsfs)
    assert cached_manifest_files(dsfs_env)
    cleared = run_dsfs("cache", "clear")
    assert cleared.returncode == 0, cleared.stderr
    assert "cached manifest file(s)" in cleared.stdout
    assert cached_manifest_files(dsfs_env) == []
    assert run_dsfs("list", "proj/b@1.0.1").returncode == 0  # read from the store again


def test_claim_naming_a_missing_manifest_is_reported(
        run_dsfs, store_url: str, three_versions: dict[str, str]) -> None:
    b1 = three_versions["b1"]
    delete_object(store_url, manifest_key(b1))
    assert_corrupt(run_dsfs("list", "proj/b@1.0.1"), b1)
    assert_corrupt(run_dsfs("list", "proj/b"), b1)
    rows, result = search_rows(run_dsfs)
    assert [r[1] for r in rows if r[0] == "proj/b"] == ["1.0.0"]
    assert f"versions/{b1}" in result.stderr


# -- header encoding -----------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_hex_id = st.text("0123456789abcdef", min_size=32, max_size=32)


@settings(max_examples=200, deadline=None)
@given(id_=_hex_id, project=_text, name=_text, version=_text, tags=st.lists(_text, max_size=4),
       parents=st.lists(_hex_id, max_size=3), description=_text,
       snapshot=st.booleans(), depth=st.integers(1, 32),
       stats=st.dictionaries(st.text(max_size=10), st.integers(0, 2**62), max_size=4))
def test_header_round_trip(id_: str, project: str, name: str, version: str, tags: list[str],
                           parents: list[str], description: str, snapshot: bool, depth: int,
                           stats: dict[str, int]) -> None:
    header = mf.Header(id=id_, project=project, name=name, version=version, parents=parents,
                       tags=tags, description=description, created="2026-11-30T10:00:00Z",
                       snapshot=snapshot, chain_depth=depth, stats=stats)
    data = mf.encode(header, [])
    assert mf.decode_header(data) == header
    assert mf.decode_header(data[:mf.header_length(data[:mf.PREFIX_SIZE])]) == header


# -- the store contract the cache check relies on -----------------------------------


def test_list_and_stat_agree_and_a_rewrite_is_seen(store_url: str) -> None:
    """``etag`` (S3) or ``mtime`` (local) is the same from ``list`` and
    ``stat``, and a same-size rewrite changes what the catalog compares."""
    store = open_store(store_url)
    store.put("versions/x", b"first version!")
    listed = next(iter(store.list("versions/")))
    stated = store.stat("versions/x")
    assert stated is not None
    assert (listed.size, listed.etag) == (stated.size, stated.etag)
    assert listed.etag
    if not store_url.startswith("s3://"):
        assert listed.mtime == stated.mtime
    before = stated
    store.put("versions/x", b"other version!")
    after = store.stat("versions/x")
    assert after is not None and after.size == before.size
    assert after.etag != before.etag
    if not store_url.startswith("s3://"):
        # a write in place (same inode) is seen too, once past the file
        # system's timestamp granularity (a jiffy at most)
        path = Path(store_url, "versions", "x")
        inode = path.stat().st_ino
        time.sleep(0.05)
        write_object(store_url, "versions/x", b"third version!")
        again = store.stat("versions/x")
        assert path.stat().st_ino == inode and again is not None
        assert again.etag != after.etag


# -- property: a damaged header never makes a version vanish quietly ------------------


@pytest.fixture(scope="module")
def one_version(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, bytes]:
    """A local store holding proj/ds 1.0.0; returns (store, id, manifest bytes)."""
    from dsfs.engine import versions

    root = tmp_path_factory.mktemp("prop")
    src = root / "src"
    make_tree(src, files=4, seed=3)
    repo = Repository(open_store(str(root / "store")), root / "cache0")
    version_id = versions.sync(repo, str(src), "proj", "ds").header.id
    data = (root / "store" / "versions" / version_id).read_bytes()
    return root / "store", version_id, data


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_damaged_header_never_hides_a_version(one_version: tuple[Path, str, bytes],
                                                tmp_path_factory: pytest.TempPathFactory,
                                                data: st.DataObject) -> None:
    """Change one byte of a claimed manifest's prefix or header: the version is
    still listed (the change was harmless), or it is reported, naming the
    object; looking it up gives it back or fails the same way; gc keeps it."""
    store_root, version_id, original = one_version
    end = mf.header_length(original[:mf.PREFIX_SIZE])
    pos = data.draw(st.integers(0, end - 1), label="offset")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != original[pos]), label="byte")
    damaged = original[:pos] + bytes([value]) + original[pos + 1:]
    path = store_root / "versions" / version_id
    path.write_bytes(damaged)
    try:
        # a fresh cache each time: what is checked is the catalog, not luck
        repo = Repository(open_store(str(store_root)), tmp_path_factory.mktemp("cache"))
        catalog = Catalog(repo)
        problems: list[str] = []
        listed = [h.id for h in catalog.visible_headers(problems.append)]
        named = f"versions/{version_id}"
        assert listed == [version_id] or any(named in p for p in problems), (listed, problems)
        assert version_id in catalog.claimed_version_ids()
        for ref in (Ref(project="proj", name="ds"), Ref(id=version_id), Ref(id=version_id[:6])):
            try:
                assert catalog.resolve(ref).id == version_id
            except (IntegrityError, FormatVersionError) as exc:
                assert named in str(exc), exc
            # the listing and the lookup agree
            else:
                assert listed == [version_id]
    finally:
        path.write_bytes(original)
