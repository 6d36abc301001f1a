"""The benchmark command keeps working: a tiny run of ours, and of the 2022 recipe when its
tools are installed (`make bench-tools`; CI installs them)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench import SEARCH_MARKER
from laion_pipeline.common.layout import DataLayout
from laion_pipeline.releases.switch import pointed_release

PROJECT = Path(__file__).resolve().parents[2]
SEED_TOOLS = PROJECT / ".venv-seed" / "bin"


def bench(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAION_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench",
            "--rows",
            "3000",
            "--work",
            str(tmp_path / "work"),
            "--report",
            str(tmp_path / "bench.md"),
            *extra,
        ],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_bench_reports_every_stage_of_our_build(tmp_path):
    search = f"{SEARCH_MARKER}\n### Search, 3,000 rows\n\nkept as it is\n\n{SEARCH_MARKER}\n"
    (tmp_path / "bench.md").write_text(
        f"# Benchmarks\n\n### 3,000 rows\n\nthe previous run's table\n\n{search}"
    )
    done = bench(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "bench.md").read_text()
    assert "### 3,000 rows" in report and "Machine: " in report
    for stage in (
        "source_files",
        "staging_images",
        "domains",
        "images_and_index",
        "entity_tables",
        "published_database",
        "analysis",
        "**total (wall)**",
    ):
        assert f"| {stage} |" in report, stage
    # The section for this size is replaced, before the search benchmark's, which stays.
    assert "the previous run's table" not in report and report.count("### 3,000 rows") == 1
    assert report.endswith(search) and report.index("### 3,000 rows") < report.index(search)
    assert "published db" in report
    assert "Published (the new database served) after " in report
    assert "| published_database_published_database_matches_manifest |" in report


def test_bench_of_the_staging_step_on_todays_releases(tmp_path):
    (tmp_path / "bench.md").write_text("# Benchmarks\n\n### 3,000 rows\n\nthe build's\n")
    done = bench(tmp_path, "--staging")
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "bench.md").read_text()
    heading = "### 3,000 rows of today's datasets: the filter and staging step, one core"
    assert report.count(heading) == 1
    assert "the build's" in report  # the build's section of the same size stays
    for shape in ("aesthetics-v2 (aesthetics-v2-6plus)", "relaion2b-en (relaion2b-en)"):
        (line,) = [line for line in report.splitlines() if line.startswith(f"| {shape} |")]
        files, read, kept = (int(v.replace(",", "")) for v in line.split("|")[2:5])
        assert (files, read) == (4, 3000)
        assert 0 < kept < 300 if shape.startswith("aesthetics") else kept == 3000


@pytest.mark.skipif(
    not (SEED_TOOLS / "parquet-tools").exists() or not shutil.which("sqlite3"),
    reason="the 2022 recipe needs `make bench-tools` and the sqlite3 command",
)
def test_bench_runs_the_2022_recipe_and_prints_the_ratio(tmp_path):
    done = bench(tmp_path, "--seed-recipe", "--tools", str(SEED_TOOLS))
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "bench.md").read_text()
    assert "The 2022 recipe" in report and "| enable-fts |" in report
    assert "x faster than the 2022 recipe builds it" in report


def test_search_bench_times_both_searches_through_datasette(tmp_path, sample_build):
    report = tmp_path / "bench.md"
    report.write_text("# Benchmarks\n\nkept\n")
    command = [sys.executable, "-m", "benchmarks.bench_search", "--data"]
    command += [str(sample_build.root), "--repeats", "2", "--report", str(report)]
    for _ in range(2):  # the second run replaces the table instead of adding one
        done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nkept\n")
    assert text.count("### Search, 7,000 rows in one database") == 1
    for line in ("| a rare word | `zorakalo` | 3 | fast search |", "| 3,957 | fast search |"):
        assert line in text
    assert "| a rare word | `zorakalo` | 3 | site search |" in text
    assert text.count("Datasette table search") == 3


def test_load_bench_drives_every_mix_and_the_abuse_without_an_error(tmp_path, sample_build):
    report = tmp_path / "bench.md"
    report.write_text("# Benchmarks\n\nkept\n")
    command = [sys.executable, "-m", "benchmarks.bench_load", "--data"]
    command += [str(sample_build.root), "--clients", "4", "--seconds", "2", "--report", str(report)]
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nkept\n") and "### Load, 7,000 rows" in text
    for mix in ("press", "distinct", "distinct, LAION_SEARCH_COUNT_CAP=1000"):
        (line,) = [row for row in text.splitlines() if row.startswith(f"| {mix} |")]
        requests, errors = line.split("|")[2], line.split("|")[7]
        assert int(requests.replace(",", "")) > 0 and errors.strip() == "0", line
    assert "refused" in text and ", 0 errors." in text


def test_abuse_bench_reports_every_page_kind_through_slow_sql_and_a_rollback(
    tmp_path, sample_build
):
    data = tmp_path / "data"
    shutil.copytree(sample_build.root, data, symlinks=True)  # it rolls back: a copy of its own
    report = tmp_path / "bench.md"
    command = [sys.executable, "-m", "benchmarks.bench_abuse", "--data", str(data)]
    command += ["--clients", "6", "--seconds", "4", "--report", str(report)]
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = report.read_text()
    assert "### Abuse, 7,000 rows" in text and "a rollback after 2 s" in text
    for kind in ("index", "table", "row", "names", "search", "lookup"):
        (line,) = [row for row in text.splitlines() if row.startswith(f"| {kind} |")]
        assert int(line.split("|")[2].replace(",", "")) > 0 and line.split("|")[5].strip() == "0"
    # The rollback went back to the release the benchmark started from.
    started = pointed_release(sample_build, "current")
    assert pointed_release(DataLayout(data.resolve()), "current") == started
