"""The sources without Dagster (``laion_pipeline/sources/``): what a script, a benchmark or
the command line can list and fetch with no resource and no instance."""

import shutil
import subprocess
import sys

import pytest

from laion_pipeline.common.errors import ConfigurationError, StaleInputError
from laion_pipeline.common.files import sha256_file
from laion_pipeline.common.layout import SAMPLE_DIR, DataLayout
from laion_pipeline.sources.folders import SampleSource, local_source
from laion_pipeline.sources.name_lists import NameLists
from laion_pipeline.sources.profiles import choose_profile
from laion_pipeline.sources.source import Misconfigured

pytestmark = pytest.mark.fast
PROFILE = choose_profile(None, "sample", None, {})


def test_the_sample_is_listed_and_fetched_as_verified_copies(tmp_path):
    layout = DataLayout(tmp_path)
    listing = SampleSource().listing(layout, PROFILE)
    assert listing.source.kind == "sample" and len(listing.entries) == 7
    fetched = SampleSource().fetch(layout, PROFILE, listing, listing.entries[0])
    assert fetched.path.parent == layout.snapshot_dir
    assert fetched.sha256 == sha256_file(SAMPLE_DIR / "data" / listing.entries[0].key)
    again = SampleSource().fetch(layout, PROFILE, listing, listing.entries[0])
    assert again == fetched  # the verified copy, not a second one


def test_a_folder_changed_since_its_listing_is_refused(tmp_path):
    folder = tmp_path / "parquet"
    shutil.copytree(SAMPLE_DIR / "data", folder)
    source = local_source(str(folder))
    listing = source.listing(DataLayout(tmp_path / "data"), PROFILE)
    changed = folder / listing.entries[0].key
    changed.write_bytes(changed.read_bytes() + b"\0")
    with pytest.raises(StaleInputError, match="changed since hf_dataset was observed"):
        source.fetch(DataLayout(tmp_path / "data"), PROFILE, listing, listing.entries[0])


def test_settings_that_name_no_source_say_what_to_set(tmp_path):
    with pytest.raises(ConfigurationError, match="needs LAION_LOCAL_DIR"):
        local_source("")
    with pytest.raises(ConfigurationError, match="LAION_SOURCE='ftp'"):
        Misconfigured("LAION_SOURCE='ftp' is not a source").listing(DataLayout(tmp_path), PROFILE)


def test_a_name_list_is_read_from_a_path_or_a_file_url(tmp_path):
    csv = tmp_path / "artists.csv"
    csv.write_text("name\nMucha\n")
    lists = NameLists({"artists": str(csv), "celebrities": csv.as_uri(), "characters": "ftp://x"})
    assert lists.read("artists") == lists.read("celebrities") == b"name\nMucha\n"
    with pytest.raises(ConfigurationError, match="LAION_CHARACTERS_CSV_URL"):
        lists.read("characters")


def test_the_sources_load_no_dagster():
    code = (
        "import sys, laion_pipeline.sources.folders, laion_pipeline.sources.huggingface, "
        "laion_pipeline.sources.name_lists\n"
        "print(sorted(m for m in sys.modules if m.startswith('dagster')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
