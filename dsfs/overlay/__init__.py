"""The writable overlay: an upper layer of edits over a mounted version, and
turning it into a child version.  No FUSE types here, and trio only in
``blocks`` (copy-up and block fill, which await the content reader).

``upper`` keeps the layer on disk (snapshot, journal, data files), ``fs`` is
the merged tree the writable adapter (``dsfs.fuse.writable``) serves and
``blocks`` moves lower bytes into it,
``commit`` computes status and publishes the child, and ``source`` is the
lower layer after a commit (the old tree plus the delta).
"""
