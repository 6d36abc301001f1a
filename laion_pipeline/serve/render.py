"""How the site shows values: cells of Datasette's pages (thumbnails, readable floats, links
to a host's images and to a name's search) and the table of images of a search or a lookup."""

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from laion_pipeline.common.blocklist import is_web_address
from laion_pipeline.releases.datasette_files import SHARD_SEARCH_URL
from laion_pipeline.search.shard_search import FOUND_END, FOUND_START

# Columns of the images table that are noise to a reader: hidden unless asked for.
HIDDEN_COLUMNS = ("hash", "__index_level_0__", "url_key")
THUMBNAIL_PX = 120


def readable_float(value: float) -> str:
    """A float as a person writes it: no exponent, no trailing zeros."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    text = f"{value:.12f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def search_url(name: str) -> str:
    """The search page for ``name`` as a phrase: what the name's image_counts counts (over
    every shard of a release of several)."""
    return f"{SHARD_SEARCH_URL}?" + urllib.parse.urlencode({"q": f'"{name}"'})


def host_url(domain: str | None) -> str:
    """The search page of a host's images (over every shard of a release of several)."""
    return f"{SHARD_SEARCH_URL}?" + urllib.parse.urlencode({"domain": domain or ""})


# Markup is written one way: templates with autoescape for pages (plugin/templates/), and for
# a cell, a Markup format string, whose every argument is escaped.
URL_CELL = Markup(
    '<a href="{url}" rel="noreferrer"><img src="{url}" loading="lazy" '
    'referrerpolicy="no-referrer" alt="" style="max-width:{px}px;max-height:{px}px"></a>'
    '<div class="laion-url" style="word-break: break-all; font-size: 0.8em">{shown}</div>'
)
# Served without thumbnails (``LAION_THUMBNAILS=no``): the address, a link, no image loaded.
URL_LINK_CELL = Markup(
    '<a class="laion-url" href="{url}" rel="noreferrer" style="word-break: break-all">{shown}</a>'
)
DOMAIN_ID_CELL = Markup('<a href="{link}">{name}</a> <span class="laion-id">{id}</span>')
LINK_CELL = Markup('<a href="{link}">{text}</a>')
# A host or URL shown isolated from the text around it, flagged when it reorders itself.
SHOWN = Markup("<bdi>{text}</bdi>")
FLAGGED = Markup('<bdi>{text}</bdi> <span class="laion-warning" title="{why}">\u26a0</span>')


def shown(text: str) -> Markup:
    """A host or a URL for a page: visible (``visible``), isolated (``<bdi>``), and flagged
    when it holds a character that reorders text."""
    if reorders(text):
        return FLAGGED.format(text=visible(text), why=REORDERS)
    return SHOWN.format(text=visible(text))


NO_HOST = "(no host)"


# Characters that reorder the text around them: a host or URL holding one can display as
# another ("moc.elpmaxe" shown as "example.com").
BIDI_CONTROLS = frozenset(
    "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
REORDERS = "\u26a0 contains characters that reorder text"


def visible(text: str) -> str:
    """``text`` as a reader may trust it: each control character shown as its symbol (a tab
    as \u2409, a NUL as \u2400), each other invisible formatting character, direction controls
    among them, as ``<U+202E>``; printable text as it is."""
    if text.isprintable():
        return text
    shown = []
    for char in text:
        code = ord(char)
        if code < 0x20:
            shown.append(chr(0x2400 + code))
        elif code == 0x7F:
            shown.append("\u2421")
        elif char.isprintable() or char == " ":
            shown.append(char)
        else:
            shown.append(f"<U+{code:04X}>")
    return "".join(shown)


def reorders(text: str | None) -> bool:
    """Whether ``text`` holds a character that reorders the text around it."""
    return bool(text) and not text.isprintable() and any(c in BIDI_CONTROLS for c in text)


def text_cell(value: str) -> Markup:
    """A text of a table page with its control characters shown, not obeyed."""
    return escape(visible(value))


def url_cell(value: str, thumbnails: bool = True) -> Markup | None:
    """An image URL as a lazy thumbnail linking to the image, the address as text under it:
    what an artist came for, there whether or not the image loads (dead links, hotlink
    blocking, no network); without ``thumbnails``, the address as a link. None for a value
    that is not a web address (shown as text)."""
    if not is_web_address(value):
        return None
    if not thumbnails:
        return URL_LINK_CELL.format(url=value, shown=shown(value))
    return URL_CELL.format(url=value, px=THUMBNAIL_PX, shown=shown(value))


def domain_id_cell(name: str | None, domain_id: Any) -> Markup:
    """An image's host by name, linking to all its images (over every shard), its id after."""
    return DOMAIN_ID_CELL.format(
        link=host_url(name), name=shown(name) if name else NO_HOST, id=domain_id
    )


def domain_cell(value: str, link: str) -> Markup:
    """A host of the domain table, linking to its images."""
    return LINK_CELL.format(link=link, text=shown(value) if value else NO_HOST)


def name_cell(value: str) -> Markup:
    """A name of a list, linking to the search for it as a phrase."""
    return LINK_CELL.format(link=search_url(value), text=visible(value))


def images_link(database: str, domain_id: Any) -> str:
    """The table page of a one-database release's images of one host."""
    return f"/{database}/images?" + urllib.parse.urlencode({"domain_id": domain_id})


FOUND_MARKERS = re.compile(f"({re.escape(FOUND_START)}|{re.escape(FOUND_END)})")


def marked_caption(text: str | None, found: str | None) -> Markup:
    """The caption as HTML, the words the search found in ``<mark>`` (from FTS5's
    highlight(); a caption that holds the marker characters itself is shown unmarked)."""
    if text is None:
        return Markup("")
    if found is None or FOUND_START in text or FOUND_END in text:
        return escape(visible(text))
    tags = {FOUND_START: Markup("<mark>"), FOUND_END: Markup("</mark>")}
    return Markup("").join(
        tags.get(part) or escape(visible(part)) for part in FOUND_MARKERS.split(found)
    )


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@dataclass(frozen=True)
class ResultRow:
    """An image of a search or a lookup as ``laion_images.html`` shows it: plain values, every
    link made here, the caption HTML (its found words marked)."""

    url: str
    url_shown: Markup
    web: bool  # the URL is a web address: linked, and shown as a thumbnail
    caption: Markup
    rowid: int
    row_link: str
    domain: Markup
    host_link: str
    aesthetic: str
    unsafe: str
    watermark: str
    width: int | None
    height: int | None


def result_rows(prefix: str, rows: list[dict[str, Any]]) -> list[ResultRow]:
    """The rows of a search or a lookup for ``laion_images.html`` (each with its ``caption``
    as HTML), their links under ``prefix`` (Datasette's base_url without its last slash)."""
    return [
        ResultRow(
            url=row["url"] or "",
            url_shown=shown(row["url"] or ""),
            web=is_web_address(row["url"]),
            caption=row["caption"],
            rowid=row["rowid"],
            row_link=f"{prefix}/{urllib.parse.quote(row['shard'])}/images/{row['rowid']}",
            domain=shown(row["domain"]) if row["domain"] else Markup(NO_HOST),
            host_link=prefix + host_url(row["domain"]),
            aesthetic=_score(row["aesthetic"]),
            unsafe=_score(row["punsafe"]),
            watermark=_score(row["pwatermark"]),
            width=row["width"],
            height=row["height"],
        )
        for row in rows
    ]


def count_text(count: int, more_than: bool) -> str:
    """``712 images``, ``1 image``, ``No images``, ``More than 10,000 images``."""
    if more_than:
        return f"More than {count:,} images"
    return "No images" if not count else f"{count:,} image{'s' if count != 1 else ''}"
