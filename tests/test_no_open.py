"""The writable adapter of a no-open mount (dsfs's patched pyfuse3), without a
mount: ``open`` answers ENOSYS, requests carry the inode, and a file's open
state (data file descriptor, lower reader handle) lives per inode in
``dsfs.fuse.handles``, a bounded table.  Since the kernel sends no RELEASE,
what an unlinked or discarded file keeps must follow the kernel's references
(``forget``), not the table: a random test drives writes, reads, truncations,
unlinks of files still held, forgets and table evictions (a table of two)
against a model of every file's bytes.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("pyfuse3", reason="pyfuse3 is not installed")
pytest.importorskip("trio", reason="trio is not installed")

from test_writable_ops import (  # noqa: E402
    LOWER,
    call,
    fields,
    fuse_errno,
    ino_of,
    size_attr,
    writable_ops,
)

from dsfs.fuse import handles  # noqa: E402
from dsfs.fuse.writable import WritableOperations  # noqa: E402
from dsfs.vfs import ROOT_INO  # noqa: E402


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[WritableOperations]:
    with writable_ops(tmp_path / "overlay", no_open=True) as value:
        yield value


def lookup(ops: WritableOperations, parent: int, name: str) -> int:
    """A LOOKUP: the kernel now holds one more reference to the answer."""
    return int(call(ops, "lookup", parent, os.fsencode(name), None).st_ino)


def held(ops: WritableOperations) -> int:
    """Files whose data file a handle holds open."""
    return sum(1 for n in ops.fs.iter_nodes() if n.opens and n.fd is not None)


def test_open_is_enosys_and_requests_carry_the_inode(ops: WritableOperations) -> None:
    assert not ops.atomic_o_trunc
    a = lookup(ops, ino_of(ops, "d"), "b.bin")
    assert fuse_errno(ops, "open", a, os.O_RDWR, None) == errno.ENOSYS
    assert ops.fs.node(a).data is None  # an open copies nothing up
    assert call(ops, "read", a, 0, 4) == LOWER["d/b.bin"][:4]
    assert ops.fs.node(a).data is None  # nor does a read
    assert call(ops, "write", a, 1, b"XY") == 2  # the first write copies up, by inode
    assert ops.fs.node(a).data is not None
    assert call(ops, "read", a, 0, 4) == LOWER["d/b.bin"][:1] + b"XY" + LOWER["d/b.bin"][3:4]
    call(ops, "fsync", a, False)
    # open(O_TRUNC) without ATOMIC_O_TRUNC: the kernel's SETATTR, then a short write
    t = lookup(ops, ino_of(ops, "d"), "a.txt")
    call(ops, "setattr", t, size_attr(0), fields(size=True), None, None)
    assert call(ops, "write", t, 0, b"z") == 1
    assert call(ops, "read", t, 0, 100) == b"z"
    # a created file's handle is its inode: the kernel's reads and writes agree
    info, attr = call(ops, "create", ROOT_INO, b"new", stat.S_IFREG | 0o644,
                      os.O_WRONLY | os.O_CREAT, None)
    assert info.fh == attr.st_ino
    call(ops, "write", info.fh, 0, b"made")
    call(ops, "release", info.fh)
    assert call(ops, "read", attr.st_ino, 0, 10) == b"made"


def test_the_table_is_bounded_and_forget_closes(ops: WritableOperations,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handles, "INODE_HANDLES", 3)
    inos = []
    for i in range(8):
        info, attr = call(ops, "create", ROOT_INO, f"f{i}".encode(), stat.S_IFREG | 0o644,
                          os.O_WRONLY | os.O_CREAT, None)
        call(ops, "write", info.fh, 0, b"%d" % i)
        call(ops, "release", info.fh)
        inos.append(attr.st_ino)
        assert held(ops) <= 3
    for i, ino in enumerate(inos):  # closed handles open again when needed
        assert call(ops, "read", ino, 0, 10) == b"%d" % i
        assert held(ops) <= 3
    call(ops, "forget", [(ino, 1) for ino in inos])
    assert held(ops) == 0


def test_an_unlinked_file_keeps_its_bytes_while_the_kernel_holds_it(
        ops: WritableOperations, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handles, "INODE_HANDLES", 1)
    info, attr = call(ops, "create", ROOT_INO, b"gone", stat.S_IFREG | 0o644,
                      os.O_WRONLY | os.O_CREAT, None)
    ino = attr.st_ino
    call(ops, "write", ino, 0, b"still here")
    call(ops, "release", info.fh)
    data = ops.fs.node(ino).data
    assert data is not None
    other = lookup(ops, ino_of(ops, "d"), "a.txt")
    call(ops, "read", other, 0, 1)  # closes the per-inode handle of "gone"
    assert ops.fs.node(ino).opens == 0
    call(ops, "unlink", ROOT_INO, b"gone", None)
    assert call(ops, "read", ino, 0, 100) == b"still here"  # a process still has it open
    assert call(ops, "write", ino, 10, b"!") == 1
    call(ops, "forget", [(ino, 1)])  # its last close: the bytes go
    ops.fs.upper.sync()
    assert not ops.fs.upper.data_path(data).exists()
    with pytest.raises(Exception):  # noqa: B017 - the node is gone
        ops.fs.node(ino)


NAMES = ["a", "b", "c"]

step = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(NAMES), st.integers(0, 40),
              st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("truncate"), st.sampled_from(NAMES), st.integers(0, 30)),
    st.tuples(st.just("read"), st.sampled_from(NAMES)),
    st.tuples(st.just("unlink"), st.sampled_from(NAMES)),
    st.tuples(st.just("forget"), st.sampled_from(NAMES)),
    st.tuples(st.just("fsync"), st.sampled_from(NAMES)),
    st.tuples(st.just("reset"),),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, max_size=30))
def test_random_no_open_histories_match_a_model(tmp_path_factory: pytest.TempPathFactory,
                                                monkeypatch: pytest.MonkeyPatch,
                                                steps: list[tuple]) -> None:
    """Files are held by the kernel (one lookup each) from their creation until
    forgotten; a held file reads and writes whatever happened to its name
    (unlinked, discarded: it keeps its bytes), exactly as the model says."""
    monkeypatch.setattr(handles, "INODE_HANDLES", 1)
    with writable_ops(tmp_path_factory.mktemp("noopen") / "overlay", no_open=True) as ops:
        model: dict[int, bytearray] = {}  # inode -> bytes, while the kernel holds it
        names: dict[str, int] = {}  # name -> inode in the tree
        gone: set[str] = set()  # data files of forgotten, nameless inodes

        def inode(name: str) -> int:
            if name not in names:
                info, attr = call(ops, "create", ROOT_INO, name.encode(),
                                  stat.S_IFREG | 0o644, os.O_RDWR | os.O_CREAT, None)
                call(ops, "release", info.fh)
                names[name] = attr.st_ino
                model[attr.st_ino] = bytearray()
            return names[name]

        def held_ino(name: str) -> int | None:
            """A held inode for ``name``: its current one, or one it had."""
            if name in names:
                return names[name]
            return next((i for i in model if i not in names.values()), None)

        for op, *args in steps:
            name = args[0] if args else ""
            if op == "write":
                ino = inode(name)
                off, data = args[1], args[2]
                call(ops, "write", ino, off, data)
                body = model[ino]
                body.extend(bytes(max(0, off - len(body))))
                body[off:off + len(data)] = data
            elif op == "truncate":
                ino = inode(name)
                call(ops, "setattr", ino, size_attr(args[1]), fields(size=True), None, None)
                body = model[ino]
                del body[args[1]:]
                body.extend(bytes(args[1] - len(body)))
            elif op == "read":
                ino = held_ino(name)
                if ino is not None:
                    assert call(ops, "read", ino, 0, 100) == bytes(model[ino])
            elif op == "unlink" and name in names:
                call(ops, "unlink", ROOT_INO, name.encode(), None)
                del names[name]
            elif op == "forget":
                ino = held_ino(name)
                if ino is not None:
                    node = ops.fs.node(ino)
                    named = ino in names.values()
                    if not named and node.data:
                        gone.add(node.data)
                    call(ops, "forget", [(ino, 1)])
                    if named:  # the kernel looks the name up again
                        assert lookup(ops, ROOT_INO, name) == ino
                    else:
                        del model[ino]
            elif op == "fsync":
                ino = held_ino(name)
                if ino is not None:
                    call(ops, "fsync", ino, False)
            elif op == "reset":
                ops.fs.reset(ops.fs.source)
                names.clear()  # every held file is now outside the tree
        for ino, body in model.items():
            assert call(ops, "read", ino, 0, 100) == bytes(body)
        for name, ino in names.items():
            assert ops.fs.resolve(name).ino == ino
        ops.fs.upper.sync()
        for data in gone:
            assert not ops.fs.upper.data_path(data).exists()
