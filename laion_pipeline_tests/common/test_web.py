"""Fetching a name list over http(s) (``common/web.py``, httpx2 and the one retry policy),
against local servers."""

import itertools
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from laion_pipeline.common.retrying import Retries
from laion_pipeline.common.web import FetchError, fetch_url

pytestmark = pytest.mark.fast


def test_basic_auth_goes_to_the_host_of_the_url_only(httpserver):
    """``user:password@`` is sent as basic auth to the URL's host, and not on to another
    host a redirect points at."""
    other = HTTPServer(host="127.0.0.1", port=0)
    other.start()
    seen = {}

    def record(name):
        def handler(request):
            seen[name] = request.headers.get("Authorization")
            return Response("name\nMucha\n")

        return handler

    try:
        other.expect_request("/moved.csv").respond_with_handler(record("other"))
        httpserver.expect_request("/list.csv").respond_with_response(
            Response(status=302, headers={"Location": other.url_for("/moved.csv")})
        )
        body = fetch_url(f"http://reader:pw@127.0.0.1:{httpserver.port}/list.csv", "LIST")
        assert body == b"name\nMucha\n"
        assert seen == {"other": None}
        httpserver.expect_request("/own.csv").respond_with_handler(record("own"))
        fetch_url(f"http://reader:pw@127.0.0.1:{httpserver.port}/own.csv", "LIST")
        assert seen["own"] == "Basic cmVhZGVyOnB3"  # base64 of reader:pw
    finally:
        other.clear()
        other.stop()


def test_a_server_error_is_retried_then_said_with_the_variable(httpserver):
    httpserver.expect_request("/down.csv").respond_with_data("busy", status=503)
    with pytest.raises(FetchError) as failed:
        fetch_url(httpserver.url_for("/down.csv"), "LAION_ARTISTS_CSV_URL", backoff=0.01)
    assert "LAION_ARTISTS_CSV_URL" in str(failed.value) and "HTTP 503" in str(failed.value)
    assert failed.value.transient
    assert len(httpserver.log) == 4  # every attempt of the default policy


def test_a_missing_list_is_not_retried(httpserver):
    httpserver.expect_request("/gone.csv").respond_with_data("no", status=404)
    with pytest.raises(FetchError) as failed:
        fetch_url(httpserver.url_for("/gone.csv"), "LIST", backoff=0.01)
    assert not failed.value.transient and len(httpserver.log) == 1


def test_retries_wait_doubling_and_say_so():
    calls, said = [], []

    class Log:
        def warning(self, text):
            said.append(text)

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError("refused")
        return "done"

    assert Retries(4, 0.05).call(flaky, what="the list", log=Log()) == "done"
    waits = [b - a for a, b in itertools.pairwise(calls)]
    assert waits[0] >= 0.05 and waits[1] >= 0.1
    assert said[0].startswith("the list failed (ConnectionError: refused); retry 1 of 3")
