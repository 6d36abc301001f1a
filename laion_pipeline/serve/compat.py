"""Every Datasette internal the site uses, and every difference between the 0.65 line and the
1.0 alphas, in one place (``test_datasette_compat.py`` holds each one to its contract on the
installed line).

Why each is needed: a release is switched in under a running server, so its databases are
opened with the inspect data of the release (no counting of 12M rows) and its metadata
replaces the server's; the fast search runs on connections Datasette prepared (our SQL
functions, the limits); page templates are read once."""

import copy
import importlib.metadata
from typing import Any

from datasette.database import Database

DATASETTE_VERSION = importlib.metadata.version("datasette")
# The 1.0 line moves table options and canned queries from metadata to configuration
# (datasette.yaml) and reads metadata from its internal database, not from a dict.
DATASETTE_1 = int(DATASETTE_VERSION.split(".")[0]) >= 1


def plain_tracebacks() -> None:
    """Datasette prints every error with rich when it is installed (Dagster installs it); for
    an address that matches no page rich raises outside an except block, turning the 404 into
    a 500. Without rich, Datasette prints tracebacks the plain way."""
    from datasette import handle_exception  # loaded with the app: not at import time

    handle_exception.rich = None


def templates_fixed(datasette: Any) -> None:
    """The server's templates do not change while it serves a release: without this, Jinja
    reads the time of every template file a page extends or includes, on every page."""
    environment = datasette._jinja_env if DATASETTE_1 else datasette.jinja_env
    environment.auto_reload = False


def prepare_connection(datasette: Any, conn: Any, database: str) -> None:
    """What Datasette does to each connection it opens (our SQL functions and limits among
    it), for a connection the plugin opens itself."""
    datasette._prepare_connection(conn, database)


def executor(datasette: Any) -> Any:
    """Datasette's thread pool for SQL (None when it runs queries on the event loop's thread)."""
    return datasette.executor


def bad_request(datasette: Any, request: Any, message: str) -> Any:
    """Datasette's own error page (or JSON) for a 400 saying ``message``."""
    from datasette.handle_exception import handle_exception
    from datasette.utils.asgi import BadRequest

    return handle_exception(datasette, request, BadRequest(message))


def replace_databases(datasette: Any, databases: dict[str, Database]) -> None:
    """Datasette's mapping of its databases replaced by ``databases`` (a mapping that answers
    each request with the databases of the release it entered): Datasette looks every
    database up through ``datasette.databases``, and its own ``add_database`` copies it."""
    datasette.databases = databases


def split_executor(datasette: Any) -> None:
    """Datasette's thread pool for SQL kept for open SQL, the pages given their own
    (``pools.split``)."""
    from laion_pipeline.serve.pools import split

    datasette.executor = split(datasette.executor, datasette.setting("num_sql_threads"))


def open_with_inspect(db: Database, info: dict[str, Any]) -> None:
    """Give an immutable database the hash, size and table counts of the release's inspect
    data, so Datasette neither hashes nor counts the file."""
    db.cached_hash, db.cached_size = info["hash"], info["size"]
    db._cached_table_counts = {table: t["count"] for table, t in info["tables"].items()}


def _split(metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The release's metadata as the 1.0 line wants it: descriptions as metadata; table
    options and canned queries as configuration."""
    from datasette.utils import move_table_config

    metadata, config = move_table_config(metadata, {})
    for name, database in metadata.get("databases", {}).items():
        if "queries" in database:
            config.setdefault("databases", {}).setdefault(name, {})["queries"] = database.pop(
                "queries"
            )
    return metadata, config


# The 1.0 line's internal tables of a database's metadata, refilled from a release's.
METADATA_TABLES = ("metadata_databases", "metadata_resources", "metadata_columns")


class ReleaseSettings:
    """The server's metadata and configuration with a release's in place of the previous
    release's; what the user gave (``-m``, ``-c``: a database's ``allow``, another database's
    metadata) stays."""

    def __init__(self, datasette: Any) -> None:
        self.datasette = datasette
        self.user_config: dict[str, Any] | None = None  # as it was before the first release
        self.databases: set[str] = set()  # the databases the last release described
        self.instance_keys: set[str] = set()  # and the instance's metadata it set

    async def use(self, inspect: dict[str, Any], metadata: dict[str, Any]) -> None:
        datasette = self.datasette
        datasette.inspect_data = inspect
        if not DATASETTE_1:
            datasette._metadata_local = metadata
            # Datasette refreshes its catalog of the databases' tables from whichever request
            # comes first, on that request's threads: here, at once, on the pages' threads,
            # never behind open SQL.
            await datasette.refresh_schemas()
            return
        metadata, config = _split(metadata)
        if self.user_config is None:
            self.user_config = copy.deepcopy(getattr(datasette, "config", None) or {})
        datasette.config = _merged(self.user_config, config)
        stale = self.databases | set(metadata.get("databases", {}))
        stale_keys = self.instance_keys

        def forget(conn: Any) -> None:
            for table in METADATA_TABLES:
                conn.executemany(
                    f"DELETE FROM {table} WHERE database_name = ?", [(n,) for n in stale]
                )
            conn.executemany(
                "DELETE FROM metadata_instance WHERE key = ?", [(k,) for k in stale_keys]
            )

        await datasette.get_internal_database().execute_write_fn(forget)
        datasette._metadata_local = metadata
        await datasette.apply_metadata_json()
        self.databases = set(metadata.get("databases", {})) | set(config.get("databases", {}))
        self.instance_keys = {key for key in metadata if key != "databases"}
        from datasette.stored_queries import save_queries_from_config

        await save_queries_from_config(datasette)
        # The 1.0 line lists databases and tables from its internal catalog, refreshed at most
        # once a second: at once here, so no page names a database of the previous release.
        await datasette.refresh_schemas(force=True)


def _merged(user: dict[str, Any], release: dict[str, Any]) -> dict[str, Any]:
    """``user``'s configuration with ``release``'s merged in, key by key at every depth: the
    release's table options and queries added, the user's own keys (a database's ``allow``)
    kept."""
    merged = copy.deepcopy(user)
    for key, value in release.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


async def site_title(datasette: Any) -> str | None:
    """The instance's title from Datasette's metadata (a query of the internal database on
    the 1.0 line: the site asks it only when it serves no release)."""
    if DATASETTE_1:
        return (await datasette.get_instance_metadata()).get("title")
    return datasette.metadata("title")
