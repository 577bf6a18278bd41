"""The pyfuse3 adapters (thin): two siblings over ``dsfs.fuse.adapter``'s base."""

from dsfs.fuse.adapter import ERRNO, TIMEOUT, BaseOperations, errno_for
from dsfs.fuse.readonly import ReadOnlyOperations

__all__ = ["ERRNO", "TIMEOUT", "BaseOperations", "ReadOnlyOperations", "errno_for"]
