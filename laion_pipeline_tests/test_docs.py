"""What a newcomer reads first: the README's quickstart, the benchmarks page, and the site's
credits, each saying only what holds for this repository."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from laion_pipeline.releases.datasette_files import datasette_metadata

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.fast
def test_the_quickstart_is_two_commands_that_say_how_long_they_take():
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("## Quickstart", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in quickstart.strip().splitlines() if line.strip()]
    assert [line.split("#")[0].strip() for line in commands] == ["make run", "make test"]
    assert re.search(r"make test .*about \d+ minutes", quickstart)


@pytest.mark.fast
def test_the_benchmarks_name_their_targets_and_refer_only_to_files_of_the_repository():
    benchmarks = (PROJECT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert "PERFORMANCE.md" not in benchmarks  # the product's file, not in this repository
    for link in re.findall(r"\]\(([^)#]+)\)", benchmarks):
        if not link.startswith("http"):
            assert (PROJECT / "docs" / link).exists(), link


@pytest.mark.fast
def test_no_tracked_file_is_also_ignored():
    tracked = subprocess.run(
        ["git", "ls-files", "-ci", "--exclude-standard"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert tracked.stdout.split() == []


@pytest.mark.fast
def test_the_sample_credits_no_removed_dataset_page():
    source = {"kind": "sample", "location": "laion_pipeline/sample_data", "revision": "x"}
    profile = {"name": "6plus", "title": "LAION", "about": "", "database": "laion"}
    metadata = datasette_metadata(source, profile)
    assert "Synthetic" in metadata["source"] and "not real images" in metadata["source"]
    assert "huggingface.co" not in json.dumps(metadata)
