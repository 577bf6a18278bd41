"""``dsfs ui``: a local, read-only web view of a store's datasets.

Pages (``app.py`` routes them): every dataset by project with a search; a
dataset's lineage as a server-drawn SVG graph; a version (header, changes
against each parent, a paged folder browser, statistics plots, previews of
its first files); a diff of any two versions.  ``export.py`` writes the same
pages as static files.

The pages read through the engine's public functions (the catalog, the tree
index a mount uses, the shared chunk cache) and never write to the store.
Only ``render.py`` imports jinja2.  Nothing here runs JavaScript: plots and the
lineage graph are SVG drawn on the server (``svg.py``), so the pages need no
build step and fetch nothing from elsewhere.
"""
