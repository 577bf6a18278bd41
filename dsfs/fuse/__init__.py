"""The pyfuse3 adapter (thin): see ``dsfs.fuse.adapter``."""

from dsfs.fuse.adapter import ERRNO, TIMEOUT, FileReader, Operations, errno_for

__all__ = ["ERRNO", "TIMEOUT", "FileReader", "Operations", "errno_for"]
