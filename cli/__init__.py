"""The click front end of dsfs (installed as ``dsfs_cli``): parse, call one
engine function, print.  No dataset logic lives here."""
