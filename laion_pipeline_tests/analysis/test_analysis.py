"""The analysis: the sample built through every asset, its numbers checked against independent
SQL and Python on the published database, its charts opened as images, its report read as a
page, its metadata as the UI records it."""

import json
import math
import shutil
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize
from PIL import Image

from laion_pipeline.analysis import findings as analysis_module
from laion_pipeline.analysis.charts import png, texts_outside
from laion_pipeline.analysis.findings import NUMBERS, ChartError, chart_figures, charts
from laion_pipeline.common.layout import (
    ENTITY_KINDS,
    REPORT_CHARTS,
    REPORT_FILES,
    SAMPLE_DIR,
    DataLayout,
)
from laion_pipeline.orchestration.definitions import all_asset_checks, all_assets
from laion_pipeline.orchestration.resources import build_resources
from laion_pipeline.releases.lock import data_dir_lock
from laion_pipeline.releases.switch import rollback
from laion_pipeline_tests.conftest import build, failure_text, local, row, tokens, write


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The sample built once; the result (for its metadata) and the data folder."""
    data = tmp_path_factory.mktemp("analysis")
    result = build(data)
    assert result.success
    return result, DataLayout(data.resolve())


@pytest.fixture(scope="module")
def analysis(built) -> dict:
    _, layout = built
    return json.loads((layout.report_dir / "analysis.json").read_text())


@pytest.fixture(scope="module")
def db(built):
    _, layout = built
    conn = sqlite3.connect(f"{layout.published_db.as_uri()}?mode=ro", uri=True)
    yield conn
    conn.close()


def test_top_domains_and_their_share_match_the_images(analysis, db):
    (images,) = db.execute("SELECT count(*) FROM images").fetchone()
    top = db.execute(
        "SELECT d.domain, count(*) FROM images i JOIN domain d ON d.id = i.domain_id "
        "GROUP BY d.id ORDER BY count(*) DESC, d.id LIMIT 20"
    ).fetchall()
    assert analysis["images"] == images == 7000
    assert analysis["domains"] == db.execute("SELECT count(*) FROM domain").fetchone()[0]
    assert [(d["domain"], d["images"]) for d in analysis["top_domains"]] == top
    assert [d["share"] for d in analysis["top_domains"]] == [n / images for _, n in top]
    assert analysis["top_domain_share"] == top[0][1] / images
    assert analysis["top_20_domains_share"] == pytest.approx(sum(n for _, n in top) / images)
    assert analysis["top_domains"][0]["domain"] == "i.pinimg.com"  # as in 2022


def test_top_names_of_each_list_match_their_tables(analysis, db):
    for kind in ENTITY_KINDS:
        counts = dict(db.execute(f"SELECT name, image_counts FROM {kind} WHERE trim(name) != ''"))
        expected = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))[:20]
        found = analysis["names"][kind]
        assert [(n["name"], n["images"]) for n in found["top"]] == expected
        assert found["names"] == len(counts)
        assert found["names_found"] == sum(1 for n in counts.values() if n > 0)


def test_the_share_of_captions_naming_anyone_is_counted_without_sqlite(analysis, db):
    names = {
        tokens(name)
        for kind in ENTITY_KINDS
        for (name,) in db.execute(f"SELECT name FROM {kind}")
        if tokens(name)
    }
    named = 0
    for (caption,) in db.execute("SELECT text FROM images"):
        words = tokens(caption)
        spans = {words[i : i + n] for n in {len(t) for t in names} for i in range(len(words))}
        named += bool(names & spans)
    assert analysis["named_images"] == named > 0
    assert analysis["named_share"] == named / 7000


@pytest.mark.parametrize("per_query", [1, 7, 1_000])
def test_the_named_images_do_not_depend_on_how_many_names_one_query_matches(
    analysis, db, monkeypatch, per_query
):
    monkeypatch.setattr(analysis_module, "NAMES_PER_QUERY", per_query)
    assert analysis_module.named_images(db) == analysis["named_images"]


def _histogram(values: list, bin_of) -> tuple[dict[int, int], int]:
    counts: dict[int, int] = {}
    for value in values:
        if value is not None:
            counts[bin_of(value)] = counts.get(bin_of(value), 0) + 1
    return counts, sum(1 for v in values if v is None)


BINS = {
    "aesthetic": lambda v: min(max(math.floor(v * 4), 0), 39),
    "width": lambda v: min(max(v // 256, 0), 16),
    "height": lambda v: min(max(v // 256, 0), 16),
    "punsafe": lambda v: min(max(math.floor(v * 20), 0), 19),
    "pwatermark": lambda v: min(max(math.floor(v * 20), 0), 19),
}


def test_distributions_match_the_published_values(analysis, db):
    for column, bin_of in BINS.items():
        values = [v for (v,) in db.execute(f"SELECT {column} FROM images")]
        counts, nulls = _histogram(values, bin_of)
        found = analysis[column]
        assert found["null"] == nulls, column
        assert {i: b["images"] for i, b in enumerate(found["bins"]) if b["images"]} == {
            i - (min(counts) if column == "aesthetic" else 0): n for i, n in counts.items()
        }, column
        assert sum(b["images"] for b in found["bins"]) + nulls == 7000
        for b in found["bins"]:
            if b["images"]:
                assert b["to"] is None or b["from"] < b["to"]
    assert analysis["aesthetic"]["bins"][0]["from"] == 6.0  # the "6+" in the data's name
    assert analysis["width"]["bins"][-1]["label"] == "4096+"
    mean = db.execute("SELECT avg(aesthetic) FROM images").fetchone()[0]
    assert analysis["aesthetic_mean"] == pytest.approx(mean, rel=1e-12)
    for column, what in (("punsafe", "unsafe"), ("pwatermark", "watermarked")):
        (flagged,) = db.execute(f"SELECT count(*) FROM images WHERE {column} > 0.5").fetchone()
        assert analysis[f"{what}_images"] == flagged > 0
        assert analysis[f"{what}_share"] == flagged / 7000


def test_the_analysis_describes_the_published_database(built, analysis):
    _, layout = built
    manifest = json.loads(layout.manifest_json.read_text())
    assert analysis["database"]["sha256"] == manifest["sha256"]
    assert analysis["database"]["row_counts"] == manifest["row_counts"]


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])

    def handle_data(self, data):
        self.text.append(data)


def test_the_charts_are_png_images_and_the_report_shows_each(built, analysis):
    _, layout = built
    assert sorted(p.name for p in layout.report_dir.iterdir()) == sorted(REPORT_FILES)
    for name in REPORT_CHARTS:
        with Image.open(layout.report_dir / f"{name}.png") as image:
            image.verify()
            assert image.format == "PNG"
            assert image.size[0] >= 800 and image.size[1] >= 300, name
    page = Page()
    page.feed((layout.report_dir / "index.html").read_text())
    assert page.images == [f"{name}.png" for name in REPORT_CHARTS]
    assert "analysis.json" in page.links
    text = " ".join(page.text)
    assert f"{analysis['images']:,}" in text
    assert analysis["top_domains"][0]["domain"] in text
    assert analysis["names"]["artists"]["top"][0]["name"] in text
    assert "/laion-aesthetic-6pls/search?q=%22" in " ".join(page.links)


HOSTILE_LABELS = [
    r"$\foo$",
    "$x^{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{$",
    "a name " * 30,
    "_a$b$c_",
]


def hostile(analysis: dict) -> dict:
    """The analysis with names and hosts that matplotlib would parse as math, and long ones."""
    changed = json.loads(json.dumps(analysis))
    for i, label in enumerate(HOSTILE_LABELS):
        changed["top_domains"][i]["domain"] = label
        for kind in ENTITY_KINDS:
            changed["names"][kind]["top"][i]["name"] = label
    changed["names"]["characters"]["names"] = 123_456_789  # a long axis label
    return changed


def test_every_chart_shows_labels_as_plain_text_inside_the_picture(analysis):
    for data in (analysis, hostile(analysis)):
        for name, (draw, _, _) in chart_figures(data).items():
            figure = draw()
            assert png(figure).startswith(b"\x89PNG"), name
            assert texts_outside(figure) == [], name
    figure = chart_figures(hostile(analysis))["top_domains"][0]()
    ticks = {t.get_text() for t in figure.axes[0].get_yticklabels()}
    assert {r"$\foo$", HOSTILE_LABELS[1][:41] + "…"} <= ticks  # as typed, not as math


def test_a_chart_that_cannot_be_drawn_names_its_list_and_label(analysis):
    broken = json.loads(json.dumps(analysis))
    broken["names"]["celebrities"]["top"][1]["name"] = None
    with pytest.raises(ChartError, match=r"top_celebrities\.png \(the most named of the "
                       r"celebrities list\) could not be drawn on the label None"):  # fmt: skip
        charts(broken)


@pytest.mark.fast
def test_the_mean_aesthetic_score_does_not_depend_on_the_threads_that_sum_it():
    import duckdb

    from laion_pipeline.analysis.findings import distributions

    duck = duckdb.connect()
    duck.execute(
        "CREATE TABLE staging_images AS SELECT random() * 10 AS aesthetic, random() AS punsafe, "
        "random() AS pwatermark, 640 AS width, 480 AS height FROM range(3000000)"
    )
    means = set()
    for threads in (1, 2, 4, 8):
        duck.execute(f"SET threads = {threads}")
        means.add(distributions(duck)["aesthetic_mean"])
    assert len(means) == 1


def test_each_build_records_the_numbers_and_shows_the_charts(built, analysis):
    result, _ = built
    (materialization,) = result.asset_materializations_for_node("analysis")
    metadata = materialization.metadata
    for name, (sql_type, _) in NUMBERS.items():
        assert metadata[name].value == pytest.approx(analysis[name], abs=5e-5), name
        assert metadata[name].value == round(metadata[name].value, 4), name  # readable
        assert isinstance(metadata[name].value, int if sql_type == "INTEGER" else float)
    for name in REPORT_CHARTS:
        assert metadata[f"chart_{name}"].value.startswith("![")
        assert "(data:image/png;base64,iVBORw0KGgo" in metadata[f"chart_{name}"].value
    release = metadata["release"].value
    assert metadata["dagster/uri"].value.endswith(
        f"/published/releases/{release}/report/index.html"
    )
    (check,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "report_complete"
    ]
    assert check.passed
    assert metadata["size"].value.endswith(" MB") and isinstance(metadata["size_bytes"].value, int)
    for evaluation in result.get_asset_check_evaluations():  # a number the UI plots, each
        numbers = [v for v in evaluation.metadata.values() if type(v.value) in (int, float)]
        assert numbers, evaluation.check_name


def _lists(folder: Path, celebrities: str) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    env = {}
    for kind in ENTITY_KINDS:
        path = folder / f"{kind}.csv"
        if kind == "celebrities":
            path.write_text(celebrities)
        else:
            shutil.copy(SAMPLE_DIR / f"{kind}.csv", path)
        env[f"LAION_{kind.upper()}_CSV_URL"] = str(path)
    return env


def test_names_are_text_in_the_report_never_markup(tmp_path):
    env = _lists(tmp_path / "lists", 'name\n<script>alert("x")</script>\nA & B <b>\n')
    assert build(tmp_path / "data", env).success
    page = (DataLayout((tmp_path / "data").resolve()).report_dir / "index.html").read_text()
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page  # markupsafe's escapes
    assert "A &amp; B &lt;b&gt;" in page


def roll_back(layout: DataLayout) -> dict:
    """Roll back as `make rollback` does; the manifest of the release now served."""
    with data_dir_lock(layout):
        served = rollback(layout)
    return json.loads(layout.release(served).manifest_json.read_text())


def test_rollback_brings_back_the_report_of_the_database_it_restores(tmp_path):
    data = tmp_path / "data"
    assert build(data, _lists(tmp_path / "one", "name\nTaylor Swift\n")).success
    assert build(data, _lists(tmp_path / "two", "name\nTaylor Swift\nKeanu Reeves\n")).success
    layout = DataLayout(data.resolve())

    def described() -> tuple[str, list[str]]:
        analysis = json.loads((layout.report_dir / "analysis.json").read_text())
        names = [n["name"] for n in analysis["names"]["celebrities"]["top"]]
        return analysis["database"]["sha256"], names

    manifest = json.loads(layout.manifest_json.read_text())
    assert described() == (manifest["sha256"], sorted(["Taylor Swift", "Keanu Reeves"]))
    restored = roll_back(layout)
    assert described() == (restored["sha256"], ["Taylor Swift"])


def test_an_analysis_of_other_staged_files_than_the_published_ones_fails_clearly(built, tmp_path):
    _, layout = built
    data = tmp_path / "data"
    shutil.copytree(layout.root, data, symlinks=True)
    moved = DataLayout(data.resolve())
    local = tmp_path / "parquet"
    local.mkdir()
    first = sorted((SAMPLE_DIR / "data").glob("*.parquet"))[0]
    shutil.copy(first, local / first.name)
    env = {"LAION_DATA_DIR": str(data), "LAION_SOURCE": "local", "LAION_LOCAL_DIR": str(local)}
    resources = build_resources(env)
    instance = DagsterInstance.ephemeral()
    staged = build(data, env, instance=instance, selection=["staging_images"])
    assert staged.success
    before = (moved.report_dir / "analysis.json").read_bytes()
    result = materialize(
        [*all_assets, *all_asset_checks],
        resources=resources,
        instance=instance,
        selection=["analysis"],
        raise_on_error=False,
    )
    assert not result.success
    message = failure_text(result)
    assert "not those of the published database" in message
    assert "materialize published_database" in message
    assert (moved.report_dir / "analysis.json").read_bytes() == before
    assert result.asset_materializations_for_node("analysis") == []


def test_odd_numbers_fall_in_the_end_bins_or_count_as_no_value(tmp_path):
    inf, nan = float("inf"), float("nan")
    odd = [
        row(0, AESTHETIC_SCORE=nan, punsafe=nan, WIDTH=nan),
        row(1, AESTHETIC_SCORE=inf, punsafe=inf, WIDTH=1e20),
        row(2, AESTHETIC_SCORE=-inf, punsafe=-inf, WIDTH=-5.0),
        row(3, AESTHETIC_SCORE=3e38, punsafe=2.0, WIDTH=100_000.0),
        row(4, AESTHETIC_SCORE=-3.0, punsafe=-1.0, WIDTH=0.0),
        row(5, AESTHETIC_SCORE=6.5, punsafe=0.5, WIDTH=4095.0),
    ]
    write(tmp_path / "parquet" / "odd.parquet", odd)
    assert build(tmp_path / "data", local(tmp_path / "parquet")).success
    layout = DataLayout((tmp_path / "data").resolve())
    analysis = json.loads((layout.report_dir / "analysis.json").read_text())
    aesthetic = analysis["aesthetic"]
    assert aesthetic["null"] == 3  # NaN and both infinities
    assert aesthetic["bins"][0] == {"from": 0.0, "to": 0.25, "label": "0.00", "images": 1}
    assert aesthetic["bins"][-1] == {"from": 9.75, "to": 10.0, "label": "9.75", "images": 1}
    assert sum(b["images"] for b in aesthetic["bins"]) == 3
    assert analysis["aesthetic_mean"] == pytest.approx((3e38 - 3.0 + 6.5) / 3, rel=1e-6)
    # A probability outside 0..1 is NULL from staging on (the value rules): 2.0 and -1.0 too.
    punsafe = {b["label"]: b["images"] for b in analysis["punsafe"]["bins"] if b["images"]}
    assert (punsafe, analysis["punsafe"]["null"]) == ({"0.50": 1}, 5)
    assert analysis["unsafe_images"] == 0  # 0.5 is not above 0.5
    width = {b["label"]: b["images"] for b in analysis["width"]["bins"] if b["images"]}
    # NaN, 1e20, -5 and 0 are no width (NULL); 100,000 falls in the last bin
    assert (width, analysis["width"]["null"]) == ({"3840": 1, "4096+": 1}, 4)


def test_a_new_publish_removes_the_report_of_the_database_it_replaces(tmp_path):
    data = tmp_path / "data"
    assert build(data, _lists(tmp_path / "one", "name\nTaylor Swift\n")).success
    layout = DataLayout(data.resolve())
    first = json.loads((layout.report_dir / "analysis.json").read_text())
    resources = build_resources(
        {"LAION_DATA_DIR": str(data), **_lists(tmp_path / "two", "name\nKeanu Reeves\n")}
    )
    republished = materialize(
        [*all_assets, *all_asset_checks],
        resources=resources,
        selection=["entity_csvs", "celebrities", "published_database"],
    )
    assert republished.success
    # The new database is served with no report rather than the old one's...
    assert not any(path.exists() for path in layout.report_files)
    kept = json.loads((layout.previous_dir / "report" / "analysis.json").read_text())
    assert kept == first
    # ...and a rollback brings the old database back with its report.
    assert roll_back(layout)["sha256"] == first["database"]["sha256"]
    assert json.loads((layout.report_dir / "analysis.json").read_text()) == first
