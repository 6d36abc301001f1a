"""Takedowns: the images a person asked to have removed, as a list of their URLs, their
websites and their LAION hashes (``LAION_BLOCKLIST``, a file or an http(s) URL).

The list is applied twice: by the server at once (no row a page, an export or a query shows
names a listed image by its URL, its hash or its website), and by staging on the next build
(the rows are left out of the staged files, counted in each file's record and metadata). The
file has one entry a line:

- an image's URL, as the dataset has it: ``https://example.com/a.jpg``;
- ``host example.com``: every image of that website and of its subdomains;
- ``hash 4087782417533767768``: the image of that LAION hash (the dataset's ``hash`` column);

blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from laion_pipeline.common.errors import ConfigurationError

BLOCKLIST_VARIABLE = "LAION_BLOCKLIST"
R = TypeVar("R")

FORMAT = (
    "one entry a line: an image URL (http:// or https://), `host <website>` or "
    "`hash <LAION hash>`; `#` starts a comment"
)


def is_web_address(text: str | None) -> bool:
    """Whether ``text`` is an http(s) address: a list's URL, an entry's image URL, an image a
    page may link and show (never javascript: or data:)."""
    return bool(text) and text[:8].lower().startswith(("http://", "https://"))


def host_of_url(url: str) -> str:
    """The host of ``url`` in lower case, without user or port ("" when it has none)."""
    try:
        return (urllib.parse.urlsplit(url.strip()).hostname or "").rstrip(".")
    except ValueError:  # a malformed address (an unclosed IPv6 bracket)
        return ""


@dataclass(frozen=True)
class Blocklist:
    """The takedowns in force: image URLs, websites (each with its subdomains) and hashes."""

    urls: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()
    hashes: frozenset[str] = frozenset()
    origin: str = ""  # where it was read: a path or a URL

    def __bool__(self) -> bool:
        return bool(self.urls or self.hosts or self.hashes)

    @property
    def entries(self) -> int:
        return len(self.urls) + len(self.hosts) + len(self.hashes)

    @functools.cached_property
    def digest(self) -> str:
        """What the list blocks, as 12 hex digits ("" for an empty list): a staged file
        records the digest of the list it left out, and is staged again when it changes."""
        if not self:
            return ""
        lines = sorted(
            [f"url {u}" for u in self.urls]
            + [f"host {h}" for h in self.hosts]
            + [f"hash {h}" for h in self.hashes]
        )
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]

    def blocks_host(self, host: str | None) -> bool:
        """Whether ``host`` is a listed website or one of its subdomains."""
        if not host or not self.hosts:
            return False
        host = host.lower().rstrip(".")
        parts = host.split(".")
        return any(".".join(parts[i:]) in self.hosts for i in range(len(parts)))

    def blocks_url(self, url: str | None) -> bool:
        """Whether the image at ``url`` is taken down (listed, or of a listed website)."""
        if not url:
            return False
        if url in self.urls:
            return True
        return bool(self.hosts) and is_web_address(url) and self.blocks_host(host_of_url(url))

    def blocks_value(self, value: object) -> bool:
        """Whether one value of a row shown to a visitor names a taken-down image: its URL,
        its hash, or a listed website (or a subdomain of one) itself: the domain table's row."""
        if isinstance(value, str):
            if value in self.hashes or self.blocks_url(value):
                return True
            return bool(self.hosts) and " " not in value and self.blocks_host(value)
        if isinstance(value, int) and self.hashes:
            return str(value) in self.hashes
        return False

    def blocks_row(self, values: Iterable[object]) -> bool:
        return any(self.blocks_value(v) for v in values)

    def kept(self, rows: list[R]) -> list[R]:
        """``rows`` (sequences of values, or dicts) without those naming a taken-down image."""
        if not self:
            return rows
        return [r for r in rows if not self.blocks_row(r.values() if isinstance(r, dict) else r)]

    def with_urls(self, urls: Iterable[str]) -> Blocklist:
        """The list with the URLs of ``urls`` added (the images its hashes name)."""
        return dataclasses.replace(self, urls=self.urls | frozenset(urls))


NO_BLOCKLIST = Blocklist()


def parse_blocklist(text: str, origin: str) -> Blocklist:
    """The list in ``text`` (read from ``origin``); a line that is none of its entries fails,
    naming the line."""
    urls, hosts, hashes = set(), set(), set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind, _, value = line.partition(" ")
        value = value.strip()
        if is_web_address(line):
            urls.add(line)
        elif kind.lower() == "host" and value and " " not in value:
            host = host_of_url(value) if "//" in value else value.lower().rstrip(".")
            if not host:
                raise _bad_line(origin, number, raw)
            hosts.add(host)
        elif kind.lower() == "hash" and value and " " not in value:
            hashes.add(value)
        else:
            raise _bad_line(origin, number, raw)
    return Blocklist(frozenset(urls), frozenset(hosts), frozenset(hashes), origin)


def _bad_line(origin: str, number: int, line: str) -> ConfigurationError:
    return ConfigurationError(
        f"{BLOCKLIST_VARIABLE}: line {number} of {origin} ({line.strip()[:80]!r}) is not an "
        f"entry: {FORMAT}"
    )


# A list at a URL is fetched at most once a minute by a build's process (it reads its
# profile many times); the server asks for a fresh copy each time it looks.
FETCHED_SECONDS = 60.0
_fetched: dict[str, tuple[float, Blocklist]] = {}


def read_blocklist(setting: str | None, *, max_age: float = FETCHED_SECONDS) -> Blocklist:
    """The list ``setting`` names (``LAION_BLOCKLIST``): a file, or an http(s) URL (fetched
    again when this process's last fetch is over ``max_age`` seconds old); none when unset. A
    file that is missing fails naming it."""
    setting = (setting or "").strip()
    if not setting:
        return NO_BLOCKLIST
    if is_web_address(setting):
        from laion_pipeline.common.web import fetch_url, public_url

        fetched = _fetched.get(setting)
        if fetched is not None and time.monotonic() - fetched[0] < max_age:
            return fetched[1]
        body = fetch_url(setting, BLOCKLIST_VARIABLE)
        loaded = parse_blocklist(body.decode("utf-8", errors="replace"), public_url(setting))
        _fetched[setting] = (time.monotonic(), loaded)
        return loaded
    path = Path(setting).expanduser()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise ConfigurationError(
            f"{BLOCKLIST_VARIABLE}={setting}: the list of takedowns cannot be read "
            f"({error.strerror}): point it at the file ({FORMAT}), or unset it"
        ) from error
    return parse_blocklist(text, str(path))


def blocklist_from_environment() -> Blocklist:
    return read_blocklist(os.environ.get(BLOCKLIST_VARIABLE))
