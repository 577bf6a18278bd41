"""The kernel's readahead for a mount: raised so a sequential reader sends
1 MiB requests instead of the kernel's 128 KiB default for FUSE.

Touches only ``/proc/self/mountinfo`` and the mount's backing-device entry in
sysfs (which needs root); never the mount itself.
"""

from __future__ import annotations

import logging

log = logging.getLogger("dsfs.mount.reader")

#: Kernel readahead for a mount, in KiB (the kernel's default for FUSE is 128):
#: a sequential reader then sends requests of up to 1 MiB instead of 128 KiB,
#: an eighth of the requests for the same bytes.
READAHEAD_KB = 1024


def raise_readahead(mountpoint: str, kib: int = READAHEAD_KB) -> bool:
    """Raise the kernel's readahead of the mount at ``mountpoint`` (its backing
    device's ``read_ahead_kb`` in sysfs, found through ``/proc/self/mountinfo``
    without touching the mount).  Needs root; best effort: False if not done."""
    try:
        with open("/proc/self/mountinfo") as table:
            devices = [line.split()[2] for line in table
                       if line.split()[4] == mountpoint]
        if not devices:
            return False
        with open(f"/sys/class/bdi/{devices[-1]}/read_ahead_kb", "w") as knob:
            knob.write(f"{kib}\n")
        return True
    except (OSError, IndexError) as exc:
        log.debug("readahead of %s not raised: %s", mountpoint, exc)
        return False
