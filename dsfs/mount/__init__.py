"""The mount lifecycle (trio + pyfuse3): start, signal readiness, serve, unmount.

``lifecycle`` runs a mount, in the foreground or as a detached daemon;
``reader`` serves file contents through the shared cache; ``table`` knows
which dsfs mounts exist and ends them.
"""
