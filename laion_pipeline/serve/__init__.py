"""The site: the Datasette plugin (``plugin/``, its hooks and page templates) and the plain
modules it calls: the served release and its switch, the fast search and lookup pages, the
rendering of cells and results, the response cache, the limits, and every Datasette internal
in one module (``compat.py``).

Datasette loads its plugins, this one among them, as ``datasette.app`` is imported: importing
it here first means a module of ours is never half imported when that happens.
"""

import datasette.app  # noqa: F401
