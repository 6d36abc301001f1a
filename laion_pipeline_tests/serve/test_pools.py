"""Where a request's SQL runs: open SQL on Datasette's threads within its limits, every other
page on threads of its own."""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from laion_pipeline.common.errors import ConfigurationError
from laion_pipeline.serve.pools import (
    OPEN_SQL,
    SQL_NICENESS,
    SQL_PER_CLIENT,
    SQL_PER_CLIENT_VARIABLE,
    SQL_WAITING,
    SQL_WAITING_VARIABLE,
    Refused,
    SqlAdmission,
    SqlLimits,
    split,
)

pytestmark = pytest.mark.fast


def thread_name() -> str:
    return threading.current_thread().name


def priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_open_sql_and_pages_run_on_pools_of_their_own():
    executor = split(ThreadPoolExecutor(1, thread_name_prefix="datasette"), 1)
    assert split(executor, 1) is executor and split(None, 1) is None
    try:
        assert executor.submit(thread_name).result().startswith("laion-pages")
        assert executor.submit(priority).result() == priority()
        token = OPEN_SQL.set(True)
        try:
            assert executor.submit(thread_name).result().startswith("laion-sql")
            # Open SQL gets the CPU nothing else wants: the lowest priority.
            assert executor.submit(priority).result() == SQL_NICENESS
        finally:
            OPEN_SQL.reset(token)
        # The one thread for open SQL held: a page still runs at once.
        release = threading.Event()
        held = executor.sql.submit(release.wait)
        assert executor.submit(thread_name).result(timeout=5).startswith("laion-pages")
        release.set()
        held.result(timeout=5)
    finally:
        executor.shutdown()


def test_a_client_past_its_share_or_a_full_server_is_refused_with_what_to_do():
    admission = SqlAdmission(SqlLimits(per_client=2, waiting=3))
    with admission.admitted("a"), admission.admitted("a"):
        with pytest.raises(Refused) as refused, admission.admitted("a"):
            pass
        assert refused.value.status == 429 and SQL_PER_CLIENT_VARIABLE in str(refused.value)
        with admission.admitted("b"):
            with pytest.raises(Refused) as refused, admission.admitted("c"):
                pass
            assert refused.value.status == 503 and SQL_WAITING_VARIABLE in str(refused.value)
    assert not admission.clients  # every place given back
    with admission.admitted("a"):
        pass


def test_the_limits_are_read_from_the_environment_in_ascii_digits_only():
    assert SqlLimits.from_environment({}) == SqlLimits(SQL_PER_CLIENT, SQL_WAITING)
    read = SqlLimits.from_environment({SQL_PER_CLIENT_VARIABLE: "4", SQL_WAITING_VARIABLE: "1,000"})
    assert read == SqlLimits(4, 1000)
    for bad in ("0", "-1", "two", "\uff14", "\u0664"):  # full-width and Arabic-Indic four
        with pytest.raises(ConfigurationError, match=SQL_PER_CLIENT_VARIABLE):
            SqlLimits.from_environment({SQL_PER_CLIENT_VARIABLE: bad})
