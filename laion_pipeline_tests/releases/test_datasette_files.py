"""What a release tells Datasette: its title, source and the front page's text."""

import pytest

from laion_pipeline.analysis.report import source_text as report_source
from laion_pipeline.releases.datasette_files import datasette_metadata

pytestmark = pytest.mark.fast

PROFILE = {"title": "T", "about": "About <b>this</b>", "database": "laion-aesthetic-6pls"}


def test_a_local_source_is_named_by_its_folder_never_the_servers_path():
    source = {"kind": "local", "location": "/srv/secret/place/laion-parts", "revision": "r1"}
    metadata = datasette_metadata(source, PROFILE)
    assert "laion-parts" in metadata["source"] and "/srv/secret" not in str(metadata)
    assert report_source(source) == "local laion-parts at r1"
    hub = {"kind": "huggingface", "location": "laion/aesthetics_v2_4.5", "revision": "a" * 40}
    assert datasette_metadata(hub, PROFILE)["source"] == f"laion/aesthetics_v2_4.5 at {'a' * 12}"


def test_the_front_page_text_escapes_every_value():
    html = datasette_metadata({"kind": "sample", "location": "x", "revision": ""}, PROFILE)[
        "description_html"
    ]
    assert "About &lt;b&gt;this&lt;/b&gt;" in html and "<b>" not in html
    assert '<a href="/laion-aesthetic-6pls/artists">artists</a>' in html
