"""The three name lists (artists, celebrities, characters) as CSV: an http(s) URL, a
``file://`` URL or a path; by default the 2022 Google Sheet's tabs (for the Hugging Face
source) or the bundled sample's lists."""

import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from laion_pipeline.common.errors import ConfigurationError
from laion_pipeline.common.web import fetch_url, public_url

GOOGLE_SHEET_ID = "1JLQQ3U6P0d4vDkAGuB8avmXOPIDPeDUdAEZsWTRYpng"
GOOGLE_SHEET_GIDS = {"artists": "0", "celebrities": "1037423923", "characters": "480391249"}


def google_sheet_csv_url(kind: str) -> str:
    """The CSV export of one tab of the 2022 sheet of names."""
    return (
        f"https://docs.google.com/spreadsheets/d/{GOOGLE_SHEET_ID}/export"
        f"?format=csv&gid={GOOGLE_SHEET_GIDS[kind]}"
    )


@dataclass(frozen=True)
class NameLists:
    """Where each list is read from (``urls``, by kind), and the retries of a download."""

    urls: dict[str, str]
    attempts: int = 4
    backoff_seconds: float = 2.0

    def url(self, kind: str) -> str:
        return self.urls[kind]

    def display_url(self, kind: str) -> str:
        """The list's URL for logs, metadata and messages: credentials in it masked."""
        return public_url(self.url(kind))

    def read(self, kind: str) -> bytes:
        """The raw bytes of one list."""
        url = self.url(kind)
        variable = f"LAION_{kind.upper()}_CSV_URL"
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme in ("http", "https"):
            return fetch_url(url, variable, attempts=self.attempts, backoff=self.backoff_seconds)
        if parsed.scheme == "file":
            path = Path(urllib.parse.unquote(parsed.path))
        elif not parsed.scheme or len(parsed.scheme) == 1:  # a path, or C:\ on Windows
            path = Path(url).expanduser()
        else:
            raise ConfigurationError(
                f"{variable}={self.display_url(kind)!r}: use an http(s) URL, a file:// URL or a "
                "path to a CSV file"
            )
        if not path.is_file():
            raise ConfigurationError(f"{variable}: {path} is not a file; set it to a CSV file")
        return path.read_bytes()
