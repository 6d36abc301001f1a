"""A running `make serve` shows one release at a time: while builds publish, every response
comes whole from one release and says which (`X-Laion-Release`), no request fails, and the new
release is served within seconds of its publish."""

import json
import threading
import time
import urllib.error
import urllib.request

from laion_pipeline.common.layout import DataLayout
from laion_pipeline_tests.conftest import build, table_rows_count
from laion_pipeline_tests.datasette_site import DB, served

READERS = 8
PUBLISHES = 3


def test_readers_see_exactly_one_release_per_response_across_publishes(tmp_path):
    data = tmp_path / "data"
    assert build(data).success
    layout = DataLayout(data.resolve())
    first = json.loads(layout.manifest_json.read_text())
    artists = [line for line in (data / "raw/entities/artists.csv").read_text().splitlines()]
    expected = {first["release"]: first["row_counts"]["artists"]}
    seen: list[tuple[str, int, int]] = []
    errors: list[str] = []
    stop = threading.Event()

    with served(data) as site:

        def read() -> None:
            url = f"{site.base}/{DB}/artists.json?_shape=objects&_size=max&_extra=count"
            while not stop.is_set():
                try:
                    with urllib.request.urlopen(url, timeout=30) as response:
                        release = response.headers["x-laion-release"]
                        page = json.loads(response.read())
                except (urllib.error.URLError, OSError, ValueError) as error:
                    errors.append(repr(error))
                    continue
                # The count comes from the release's inspect data, the rows from its database:
                # a response mixing two releases has them disagree.
                seen.append((release, table_rows_count(page), len(page["rows"])))

        readers = [threading.Thread(target=read) for _ in range(READERS)]
        for reader in readers:
            reader.start()
        try:
            for n in range(1, PUBLISHES + 1):
                names = tmp_path / f"artists-{n}.csv"
                names.write_text("\n".join(artists[: len(artists) - n]) + "\n")
                published = build(
                    data,
                    {"LAION_ARTISTS_CSV_URL": str(names)},
                    selection=["entity_csvs", "artists", "published_database"],
                )
                assert published.success
                manifest = json.loads(layout.manifest_json.read_text())
                expected[manifest["release"]] = manifest["row_counts"]["artists"]
                deadline = time.monotonic() + 10
                while not seen or seen[-1][0] != manifest["release"]:
                    assert time.monotonic() < deadline, "the new release is not served"
                    time.sleep(0.05)
        finally:
            stop.set()
            for reader in readers:
                reader.join()

    assert errors == []
    assert len(expected) == PUBLISHES + 1
    assert {release for release, _, _ in seen} == set(expected)
    for release, count, rows in seen:
        assert count == rows == expected[release], release
