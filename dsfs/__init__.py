"""dsfs: versioned datasets you can mount.

Versions with a project, name, version string, tags and parents; each stores
only its changes, in a local directory or S3.  ``dsfs.Dataset`` is the Python
API; ``dsfs`` on the command line is a thin layer over it.
"""

from dsfs.dataset import Dataset
from dsfs.errors import DsfsError

__version__ = "0.1.0"
__all__ = ["Dataset", "DsfsError", "__version__"]
