"""The analysis report as a static HTML page: the charts, with the tables behind them. Served by
Datasette at ``/-/report/`` (the plugin), and readable straight from the folder."""

import html
import json
import urllib.parse
from html.parser import HTMLParser
from typing import Any

from laion_pipeline.common.files import read_json
from laion_pipeline.common.layout import ENTITY_KINDS, REPORT_CHARTS, ReleaseFiles

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
img { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { padding: 0.2rem 0.8rem; border-bottom: 1px solid #eee; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { font-weight: bold; } .muted { color: #666; font-size: 0.9rem; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def percent(share: float) -> str:
    """A share as the report and the charts write it: ``8.5%``."""
    return f"{share:.1%}"


def _table(headers: list[str], rows: list[list[tuple[str, bool]]]) -> str:
    """A table of ``(html, is_number)`` cells; the cells are already escaped."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{c}</td>' if n else f"<td>{c}</td>" for c, n in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _chart(name: str, alt: str) -> str:
    return f'<p><img src="{name}.png" alt="{_e(alt)}" width="800"></p>'


def _link(text: str, database: str, path: str, query: dict[str, str]) -> str:
    url = f"/{database}/{path}?{urllib.parse.urlencode(query)}"
    return f'<a href="{_e(url)}">{_e(text)}</a>'


def _source(source: dict[str, str]) -> str:
    revision = source.get("revision", "")
    return f"{source['kind']} {source['location']}" + (f" at {revision[:12]}" if revision else "")


def _flags(analysis: dict[str, Any]) -> str:
    rows = []
    for column, what in (("punsafe", "unsafe"), ("pwatermark", "watermarked")):
        count, share = analysis[f"{what}_images"], analysis[f"{what}_share"]
        rows.append(
            [
                (f"<code>{column}</code> above 0.5 ({what})", False),
                (f"{count:,}", True),
                (percent(share), True),
                (f"{analysis[column]['null']:,}", True),
            ]
        )
    return _table(["", "images", "share", "no value"], rows)


def report_html(analysis: dict[str, Any]) -> str:
    """The report page for ``analysis`` (what ``analyze`` returns): every value escaped, charts
    linked by relative file names."""
    database = analysis["database"]
    name = database["database"].removesuffix(".db")  # its address on the site
    images = analysis["images"]
    key_numbers = [
        ("Images", f"{images:,}"),
        ("Domains", f"{analysis['domains']:,}"),
        ("Share of the top domain", percent(analysis["top_domain_share"])),
        ("Share of the top 20 domains", percent(analysis["top_20_domains_share"])),
        ("Images whose caption names a listed name", percent(analysis["named_share"])),
        ("Images probably unsafe (punsafe > 0.5)", percent(analysis["unsafe_share"])),
        ("Images probably watermarked (pwatermark > 0.5)", percent(analysis["watermarked_share"])),
    ]
    if analysis["aesthetic_mean"] is not None:
        key_numbers.append(("Mean aesthetic score", f"{analysis['aesthetic_mean']:.2f}"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>What the images are | {_e(database['title'])}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>What the images are</h1>",
        f"<p>{_e(database['title'])}</p>",
        f'<p class="muted">Database <code>{_e(database["database"])}</code> built '
        f"{_e(database['built_at'])} from {_e(_source(database['source']))}; sha256 "
        f"<code>{_e(database['sha256'][:16])}</code>. "
        f'<a href="/{_e(name)}">Browse it</a>; every number below is also in '
        '<a href="analysis.json">analysis.json</a>.</p>',
        "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in key_numbers) + "</dl>",
        "<h2>Where the images come from</h2>",
        _chart("top_domains", "Bar chart of the domains with the most images"),
        _table(
            ["domain", "images", "share"],
            [
                [
                    (
                        _link(d["domain"] or "(no host)", name, "domain", {"domain": d["domain"]}),
                        False,
                    ),
                    (f"{d['images']:,}", True),
                    (percent(d["share"]), True),
                ]
                for d in analysis["top_domains"]
            ],
        ),
    ]
    parts.append("<h2>Who the captions name</h2>")
    parts.append(
        f"<p>{analysis['named_images']:,} images ({percent(analysis['named_share'])}) have a "
        "caption that contains at least one name of the three lists as a phrase.</p>"
    )
    for kind in ENTITY_KINDS:
        names = analysis["names"][kind]
        parts += [
            f"<h3>{_e(kind.capitalize())}</h3>",
            f"<p>{names['names_found']:,} of the {names['names']:,} names are in at least one "
            "caption.</p>",
            _chart(f"top_{kind}", f"Bar chart of the {kind} named in the most captions"),
            _table(
                ["name", "images"],
                [
                    [
                        (_link(n["name"], name, "search", {"q": f'"{n["name"]}"'}), False),
                        (f"{n['images']:,}", True),
                    ]
                    for n in names["top"]
                ],
            ),
        ]
    parts += [
        "<h2>Scores and sizes</h2>",
        _chart("aesthetic", "Histogram of the aesthetic scores"),
        _chart("image_sizes", "Histograms of image widths and heights"),
        _chart("unsafe_watermark", "Histograms of the unsafe and watermark probabilities"),
        _flags(analysis),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


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
