"""The plugin's release switching, in process (`Datasette(...).client`, no port): a server
started on `published/current` serves the release it names, switches between requests when
the link moves, and says in every response which release answered. Fast: two tiny releases."""

import asyncio
import json
import sqlite3

import pytest
from datasette.app import Datasette
from datasette.database import QueryInterrupted

from laion_pipeline.common.files import sha256_file
from laion_pipeline.common.layout import DEFAULT_DATABASE, REPORT_URL, DataLayout
from laion_pipeline.releases.datasette_files import inspect_data, table_counts
from laion_pipeline.releases.switch import new_release, switch
from laion_pipeline.serve.asgi import RELEASE_HEADER
from laion_pipeline_tests.conftest import site_title, table_rows_count
from laion_pipeline_tests.datasette_site import SLOW_SQL, in_process

pytestmark = pytest.mark.fast


def tiny_release(
    layout: DataLayout, names: list[str], database: str = DEFAULT_DATABASE, title: str = ""
) -> str:
    """A release of the database ``database`` holding only an `artists` table of ``names``."""
    release_id, files = new_release(layout, f"{len(names):064x}", database)
    conn = sqlite3.connect(files.db)
    conn.execute("CREATE TABLE artists (name TEXT)")
    conn.executemany("INSERT INTO artists VALUES (?)", [(n,) for n in names])
    conn.commit()
    counts = table_counts(conn)
    conn.close()
    files.inspect_json.write_text(json.dumps(inspect_data(files.db, sha256_file(files.db), counts)))
    files.metadata_json.write_text(json.dumps({"title": title or f"release of {len(names)}"}))
    files.manifest_json.write_text(json.dumps({"release": release_id, "database": files.db.name}))
    files.report_dir.mkdir()
    (files.report_dir / "index.html").write_text(f"<p>report of {release_id}</p>")
    return release_id


async def artists(ds: Datasette, database: str = DEFAULT_DATABASE) -> tuple[str, int, int, str]:
    response = await ds.client.get(
        f"/{database}/artists.json?_shape=objects&_size=max&_extra=count"
    )
    page = response.json()
    title = await site_title(ds)
    return (
        response.headers[RELEASE_HEADER],
        table_rows_count(page),
        len(page["rows"]),
        title,
    )


def test_a_server_follows_current_between_requests(tmp_path):
    layout = DataLayout(tmp_path)
    first = tiny_release(layout, ["Hokusai", "Mucha"])
    switch(layout, first, None)
    ds = in_process(layout)

    async def scenario() -> None:
        await ds.invoke_startup()  # as `datasette serve` does
        assert await artists(ds) == (first, 2, 2, "release of 2")
        second = tiny_release(layout, ["Hokusai"])
        switch(layout, second, first)
        assert await artists(ds) == (second, 1, 1, "release of 1")
        report = await ds.client.get(REPORT_URL)
        assert report.status_code == 302
        assert report.headers["location"] == f"{REPORT_URL}{second}/"
        page = await ds.client.get(f"{REPORT_URL}{second}/")
        assert page.text == f"<p>report of {second}</p>"
        # The previous release's report stays reachable at its own address.
        assert (await ds.client.get(f"{REPORT_URL}{first}/")).status_code == 200
        switch(layout, first, second)  # a rollback
        assert await artists(ds) == (first, 2, 2, "release of 2")

    asyncio.run(scenario())


def served_names(ds: Datasette) -> list[str]:
    """The databases a server serves (the 0.65 line lists its internal one among them)."""
    return [name for name in ds.databases if name != "_internal"]


def test_a_release_of_another_profile_is_served_under_its_own_name(tmp_path):
    """Publishing another profile's release to a running server: the next request sees only
    the new database, at its own address, with its own metadata; a rollback brings the old
    name back."""
    layout = DataLayout(tmp_path)
    first = tiny_release(layout, ["Hokusai", "Mucha"])
    switch(layout, first, None)
    ds = in_process(layout)

    async def scenario() -> None:
        await ds.invoke_startup()
        second = tiny_release(layout, ["Hokusai"], "relaion2b-en", "Re-LAION")
        switch(layout, second, first)
        assert await artists(ds, "relaion2b-en") == (second, 1, 1, "Re-LAION")
        assert served_names(ds) == ["relaion2b-en"]
        gone = await ds.client.get(f"/{DEFAULT_DATABASE}/artists.json")
        assert gone.status_code == 404
        switch(layout, first, second)
        assert await artists(ds) == (first, 2, 2, "release of 2")
        assert served_names(ds) == [DEFAULT_DATABASE]

    asyncio.run(scenario())


def test_a_database_served_by_its_own_path_is_not_switched(tmp_path):
    layout = DataLayout(tmp_path)
    first = tiny_release(layout, ["Hokusai", "Mucha"])
    switch(layout, first, None)
    ds = Datasette(immutables=[str(layout.release(first).db)])

    async def scenario() -> None:
        await ds.invoke_startup()
        response = await ds.client.get(f"/{DEFAULT_DATABASE}/artists.json")
        assert response.status_code == 200
        assert RELEASE_HEADER not in response.headers

    asyncio.run(scenario())


def test_a_query_stopped_at_the_time_limit_lets_go_of_its_cursor_on_its_own_thread(tmp_path):
    """The error of a stopped query reaches the event loop without its cursor: freeing a
    cursor waits for its connection, which by then runs the next query on that thread, so a
    cursor freed on the event loop held every request until that query ended."""
    layout = DataLayout(tmp_path)
    switch(layout, tiny_release(layout, ["Hokusai"]), None)
    ds = in_process(layout)

    async def scenario() -> BaseException:
        await ds.invoke_startup()
        with pytest.raises(QueryInterrupted) as raised:
            await ds.get_database(DEFAULT_DATABASE).execute(SLOW_SQL, custom_time_limit=50)
        return raised.value

    error: BaseException | None = asyncio.run(scenario())
    held = []
    while error is not None:
        tb = error.__traceback__
        while tb is not None:
            held += [v for v in tb.tb_frame.f_locals.values() if isinstance(v, sqlite3.Cursor)]
            tb = tb.tb_next
        error = error.__context__
    assert held == []
