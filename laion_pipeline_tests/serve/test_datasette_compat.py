"""Each Datasette internal the site uses (``laion_pipeline/serve/compat.py``), held to what the
site needs of it on the installed line (`make test` runs the 0.65 line, `make
test-datasette-1` the 1.0 line): a change in Datasette fails here, by name."""

import asyncio
import sqlite3

import pytest
from datasette.app import Datasette
from datasette.database import Database

from laion_pipeline.serve import compat

pytestmark = pytest.mark.fast


@pytest.fixture
def ds(tmp_path):
    path = tmp_path / "one.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE artists (name TEXT, image_counts INTEGER)")
    conn.executemany("INSERT INTO artists VALUES (?, ?)", [("Mucha", 1), ("Hokusai", 2)])
    conn.commit()
    conn.close()
    datasette = Datasette(immutables=[str(path)])
    asyncio.run(datasette.invoke_startup())
    return datasette


def test_plain_tracebacks_turns_rich_off():
    compat.plain_tracebacks()
    from datasette import handle_exception

    assert handle_exception.rich is None


def test_templates_are_read_once(ds):
    compat.templates_fixed(ds)
    environment = ds._jinja_env if compat.DATASETTE_1 else ds.jinja_env
    assert environment.auto_reload is False


def test_a_connection_of_ours_is_prepared_as_datasettes_are(ds):
    conn = sqlite3.connect(":memory:")
    compat.prepare_connection(ds, conn, "one")
    # laion_match is ours, registered by the plugin's prepare_connection hook.
    assert tuple(conn.execute("SELECT laion_match('Thomas Kinkade')").fetchone()) == (
        '"Thomas" "Kinkade"',
    )


def test_the_sql_threads_are_datasettes_executor(ds):
    assert compat.executor(ds) is not None
    assert hasattr(compat.executor(ds), "submit")


def test_the_pages_run_on_threads_of_their_own_and_open_sql_on_datasettes(tmp_path):
    datasette = Datasette(memory=True, settings={"num_sql_threads": 2})
    compat.split_executor(datasette)
    split = compat.executor(datasette)
    assert split.sql._max_workers == 2  # as many as Datasette's setting says
    answer = asyncio.run(datasette.get_database("_memory").execute("SELECT 1 + 1"))
    assert answer.rows[0][0] == 2  # Datasette's queries run through it


def test_datasette_looks_its_databases_up_through_the_replaced_mapping(ds, tmp_path):
    asked = []

    class Counting(dict):
        def __getitem__(self, name):
            asked.append(name)
            return dict.__getitem__(self, name)

    compat.replace_databases(ds, Counting(ds.databases))
    assert ds.get_database("one").name == "one" and "one" in asked
    response = asyncio.run(ds.client.get("/one/artists.json?_shape=array"))
    assert response.status_code == 200 and len(response.json()) == 2
    ds.add_database(Database(ds, memory_name="later"), name="later")  # copies it: no error
    assert "later" in ds.databases and "one" in ds.databases


def test_the_inspect_data_spares_hashing_and_counting(ds, tmp_path):
    db = Database(ds, path=str(tmp_path / "one.db"), is_mutable=False)
    compat.open_with_inspect(
        db, {"hash": "f" * 64, "size": 123, "tables": {"artists": {"count": 99}}}
    )
    ds.add_database(db, name="inspected")

    async def read() -> tuple:
        return db.hash, db.size, await db.table_counts(5)

    assert asyncio.run(read()) == ("f" * 64, 123, {"artists": 99})  # not the 2 rows it has


def test_a_releases_metadata_replaces_the_previous_releases(ds):
    settings = compat.ReleaseSettings(ds)

    def metadata(title: str, sort: str) -> dict:
        return {
            "title": title,
            "databases": {
                "one": {
                    "tables": {
                        "artists": {"description": f"Described for {title}", "sort_desc": sort}
                    },
                    "queries": {"top": {"sql": "SELECT name FROM artists LIMIT 1"}},
                }
            },
        }

    async def served(title: str, sort: str) -> tuple:
        await settings.use({}, metadata(title, sort))
        page = await ds.client.get("/one/artists")
        query = await ds.client.get("/one/top.json?_shape=array")
        return await compat.site_title(ds), page.text, query.status_code, query.json()

    title, page, status, rows = asyncio.run(served("First", "image_counts"))
    assert title == "First" and "Described for First" in page
    assert "sorted by image_counts descending" in page
    assert status == 200 and rows == [{"name": "Mucha"}]  # the canned query, on either line
    title, page, _, _ = asyncio.run(served("Second", "name"))
    assert title == "Second" and "Described for Second" in page and "for First" not in page
    assert "sorted by name descending" in page


@pytest.mark.skipif(not compat.DATASETTE_1, reason="datasette.yaml configuration: the 1.0 line")
def test_the_users_configuration_stays_across_releases(tmp_path):
    """A user's `allow` on our database (datasette.yaml) is kept beside each release's table
    options; the release's options replace the previous release's."""
    path = tmp_path / "one.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE artists (name TEXT, image_counts INTEGER)")
    conn.commit()
    conn.close()
    ds = Datasette(
        immutables=[str(path)], config={"databases": {"one": {"allow": {"id": "admin"}}}}
    )
    settings = compat.ReleaseSettings(ds)

    async def switch(sort: str) -> int:
        await ds.invoke_startup()
        tables = {"artists": {"sort_desc": sort}}
        await settings.use({}, {"title": sort, "databases": {"one": {"tables": tables}}})
        return (await ds.client.get("/one/artists.json")).status_code

    assert asyncio.run(switch("image_counts")) == 403  # not public: the user's allow holds
    assert ds.config["databases"]["one"]["tables"]["artists"] == {"sort_desc": "image_counts"}
    assert asyncio.run(switch("name")) == 403
    assert ds.config["databases"]["one"]["tables"]["artists"] == {"sort_desc": "name"}
    assert ds.config["databases"]["one"]["allow"] == {"id": "admin"}
