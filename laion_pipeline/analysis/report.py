"""The analysis report as a static HTML page: the charts, with the tables behind them. Served by
Datasette at ``/-/report/`` (the plugin), and readable straight from the folder."""

import json
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2

from laion_pipeline.common.files import read_json
from laion_pipeline.common.layout import ENTITY_KINDS, REPORT_CHARTS, ReleaseFiles
from laion_pipeline.sources.inputs import shown_location

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The report's page, a Jinja template with autoescape: every value from the data is escaped.
TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def percent(share: float) -> str:
    """A share as the report and the charts write it: ``8.5%``."""
    return f"{share:.1%}"


def source_text(source: dict[str, str]) -> str:
    revision = source.get("revision", "")
    where = shown_location(source)
    return f"{source['kind']} {where}" + (f" at {revision[:12]}" if revision else "")


def _url(database: str, path: str, query: dict[str, str]) -> str:
    return f"/{database}/{path}?{urllib.parse.urlencode(query)}"


def report_html(analysis: dict[str, Any]) -> str:
    """The report page for ``analysis`` (what ``analyze`` returns): every value escaped, charts
    linked by relative file names."""
    database = analysis["database"]
    name = database["database"].removesuffix(".db")  # its address on the site
    key_numbers = [
        ("Images", f"{analysis['images']:,}"),
        ("Domains", f"{analysis['domains']:,}"),
        ("Share of the top domain", percent(analysis["top_domain_share"])),
        ("Share of the top 20 domains", percent(analysis["top_20_domains_share"])),
        ("Images whose caption names a listed name", percent(analysis["named_share"])),
        ("Images probably unsafe (punsafe > 0.5)", percent(analysis["unsafe_share"])),
        ("Images probably watermarked (pwatermark > 0.5)", percent(analysis["watermarked_share"])),
    ]
    if analysis["aesthetic_mean"] is not None:
        key_numbers.append(("Mean aesthetic score", f"{analysis['aesthetic_mean']:.2f}"))
    page = TEMPLATES.get_template("report.html").render(
        database=database,
        name=name,
        source=source_text(database["source"]),
        key_numbers=key_numbers,
        domains=[
            {
                **d,
                "share": percent(d["share"]),
                "url": _url(name, "domain", {"domain": d["domain"]}),
            }
            for d in analysis["top_domains"]
        ],
        named_images=analysis["named_images"],
        named_share=percent(analysis["named_share"]),
        kinds=[
            {
                "kind": kind,
                "title": kind.capitalize(),
                **analysis["names"][kind],
                "top": [
                    {**n, "url": _url(name, "search", {"q": f'"{n["name"]}"'})}
                    for n in analysis["names"][kind]["top"]
                ],
            }
            for kind in ENTITY_KINDS
        ],
        flags=[
            {
                "column": column,
                "what": what,
                "count": analysis[f"{what}_images"],
                "share": percent(analysis[f"{what}_share"]),
                "null": analysis[column]["null"],
            }
            for column, what in (("punsafe", "unsafe"), ("pwatermark", "watermarked"))
        ],
    )
    return page + "\n"


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources += [value or "" for name, value in attrs if name == "src"]


def report_problems(release: ReleaseFiles) -> list[str]:
    """What is wrong with a release's report: a chart missing or not a PNG, the page not
    linking a chart, or numbers about another database than the release's."""
    problems = []
    for name in REPORT_CHARTS:
        path = release.report_dir / f"{name}.png"
        if not path.exists() or path.read_bytes()[:8] != PNG_SIGNATURE:
            problems.append(f"{path.name} is missing or not a PNG image")
    page = release.report_dir / "index.html"
    parser = _Images()
    parser.feed(page.read_text(encoding="utf-8") if page.exists() else "")
    unlinked = [name for name in REPORT_CHARTS if f"{name}.png" not in parser.sources]
    if unlinked:
        problems.append(f"index.html does not show {', '.join(unlinked)}")
    try:
        described = json.loads((release.report_dir / "analysis.json").read_text(encoding="utf-8"))
        published = read_json(release.manifest_json, "materialize published_database")
        if described["database"]["sha256"] != published["sha256"]:
            problems.append("analysis.json describes another database than the one published")
    except (OSError, ValueError, KeyError) as error:
        problems.append(f"analysis.json cannot be read: {error}")
    return problems
