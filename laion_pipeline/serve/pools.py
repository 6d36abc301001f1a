"""Where a request's SQL runs, so that arbitrary SQL cannot starve the pages people browse.

Datasette runs every query of every request on one pool of threads (``num_sql_threads``): a
dozen slow ``sql=`` queries, each allowed the full time limit, hold them all, and the index,
table and row pages queue behind them. The site splits that pool in two (``SplitExecutor``):

- **open SQL** (``sql=``, ``_where=``, a canned query, 1.0's ``/-/query``) runs on Datasette's
  ``num_sql_threads`` threads, and each client may have at most ``LAION_SQL_PER_CLIENT`` such
  requests in the server at once (more: 429), all clients together at most
  ``LAION_SQL_WAITING`` (more: 503), each answered at once with what to do;
- **every other page** runs on threads of its own (``PAGE_THREADS``), which open SQL never
  takes; the fast search and the lookup have theirs too (``site.SEARCH_THREADS``).

A client is its peer address as uvicorn gives it: uvicorn takes ``X-Forwarded-For`` only from
the addresses in ``FORWARDED_ALLOW_IPS`` (127.0.0.1 by default: a reverse proxy on the same
machine), so a visitor cannot choose its own address.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from laion_pipeline.common.settings import usable_cores, whole_number

# Whether the request being handled runs open SQL (set by the ASGI layer for its task).
OPEN_SQL: ContextVar[bool] = ContextVar("laion_open_sql", default=False)

# Threads for the pages people browse: SQLite releases the GIL while it reads.
PAGE_THREADS = max(2, usable_cores())

SQL_PER_CLIENT_VARIABLE = "LAION_SQL_PER_CLIENT"
SQL_PER_CLIENT = 2
SQL_WAITING_VARIABLE = "LAION_SQL_WAITING"
SQL_WAITING = 24


class SplitExecutor(Executor):
    """Datasette's executor split in two: a request's SQL runs on ``sql`` when the request
    runs open SQL (``OPEN_SQL``), on ``pages`` otherwise."""

    def __init__(self, sql: Executor, pages: Executor) -> None:
        self.sql = sql
        self.pages = pages

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        pool = self.sql if OPEN_SQL.get() else self.pages
        return pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.sql.shutdown(wait, cancel_futures=cancel_futures)
        self.pages.shutdown(wait, cancel_futures=cancel_futures)


# How much less CPU open SQL gets than the rest of the server when both want it: Linux's
# nice value of its threads (19, the lowest priority: a thread at 0 is given about 70 times
# its share). A dozen queries running to the time limit then take only the CPU nothing else
# wants, so the event loop, the pages and the search are not starved on a machine of few
# cores.
SQL_NICENESS = 19


def lower_priority() -> None:
    """Give the calling thread the lowest CPU priority (Linux: a thread's own nice value;
    elsewhere, nothing)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SQL_NICENESS)


def split(executor: Executor | None, threads: int) -> Executor | None:
    """Datasette's executor split: open SQL on ``threads`` threads (Datasette's
    ``num_sql_threads``) at the lowest CPU priority, the pages on a pool of their own; None
    (Datasette runs queries on the event loop's thread) stays None."""
    if executor is None or isinstance(executor, SplitExecutor):
        return executor
    executor.shutdown(wait=False)  # replaced by threads that start at the lowest priority
    sql = ThreadPoolExecutor(threads, thread_name_prefix="laion-sql", initializer=lower_priority)
    pages = ThreadPoolExecutor(PAGE_THREADS, thread_name_prefix="laion-pages")
    return SplitExecutor(sql, pages)


@dataclass(frozen=True)
class SqlLimits:
    per_client: int
    waiting: int

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> SqlLimits:
        return cls(
            whole_number(
                SQL_PER_CLIENT_VARIABLE,
                environ.get(SQL_PER_CLIENT_VARIABLE),
                SQL_PER_CLIENT,
                "the open-SQL requests one client may have in the server at once, a whole "
                "number of at least 1",
            ),
            whole_number(
                SQL_WAITING_VARIABLE,
                environ.get(SQL_WAITING_VARIABLE),
                SQL_WAITING,
                "the open-SQL requests all clients together may have in the server at once, "
                "a whole number of at least 1",
            ),
        )


class Refused(Exception):
    """An open-SQL request the server does not take now: its status and what to do."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


@dataclass
class SqlAdmission:
    """The open-SQL requests in the server, per client and in all."""

    limits: SqlLimits = field(default_factory=SqlLimits.from_environment)
    clients: collections.Counter[str] = field(default_factory=collections.Counter)

    @contextmanager
    def admitted(self, client: str) -> Iterator[None]:
        """Hold a place for one open-SQL request of ``client``, or raise ``Refused``."""
        if self.clients[client] >= self.limits.per_client:
            raise Refused(
                429,
                f"at most {self.limits.per_client} SQL queries of one client at a time "
                f"({SQL_PER_CLIENT_VARIABLE}): wait for yours to finish, then try again",
            )
        if self.clients.total() >= self.limits.waiting:
            raise Refused(
                503,
                f"the server is running {self.limits.waiting} SQL queries "
                f"({SQL_WAITING_VARIABLE}): try again in a few seconds; the search, the "
                "lookup and the table pages answer meanwhile",
            )
        self.clients[client] += 1
        try:
            yield
        finally:
            self.clients[client] -= 1
            if not self.clients[client]:
                del self.clients[client]
