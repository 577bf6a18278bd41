"""The writable overlay: an upper layer of edits over a mounted version, and
turning it into a child version.  No FUSE types here, and trio only in
``blocks`` (copy-up and block fill, which await the content reader).

``journal`` is the records' codec, ``upper`` keeps the layer on disk
(snapshot, journal, data files), ``fs`` is the merged tree the writable
adapter (``dsfs.fuse.writable``) serves, built on ``nodes`` (inodes and
names), ``records`` (the journal side: records and replay) and ``contents``
(copy-up, the block map, writes), and ``blocks`` moves lower bytes into it,
``commit`` computes status and publishes the child, and ``source`` is the
lower layer after a commit (the old tree plus the delta).
"""
