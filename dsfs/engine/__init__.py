"""Datasets and versions: create, add, remove, close, sync, get, diff, squash,
verify, lineage, tag, delete, gc.  Callers use ``dsfs.Dataset`` or the
functions of the modules here; nothing in this package prints or parses
command lines."""
