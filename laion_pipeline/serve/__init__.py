"""The Datasette plugin: pages, the fast search and lookup views, the cache and the limits."""
