"""The site: the Datasette plugin (``plugin/``, its hooks and page templates) and the plain
modules it calls: the served release and its switch, the fast search and lookup pages, the
rendering of cells and results, the response cache, the limits, and every Datasette internal
in one module (``compat.py``).

Datasette loads its plugins, this one among them, as ``datasette.plugins`` is imported (by
``datasette.app``): importing it here first means a module of ours is never half imported when
that happens. Unless Datasette is loading its plugins now (a script imported
``datasette.plugins`` first): then ``datasette.app`` cannot be imported yet, and need not be.
"""

import sys

if "datasette.plugins" not in sys.modules:
    import datasette.app  # noqa: F401
