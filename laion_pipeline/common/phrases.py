"""FTS5 queries: the one place that quotes a phrase, and what a person's search text means
(the search, the lookup, the name counts and the analysis ask the caption index through it;
the index itself is built by ``laion_pipeline.build.fts``)."""

import re


def fts_phrase(name: str) -> str:
    """``name`` as one FTS5 phrase: wrapped in double quotes, inner double quotes doubled.

    Inside a phrase every character is literal text for the tokenizer, so names with ``'``,
    ``*``, ``-``, ``:`` or FTS keywords (AND, OR, NOT, NEAR) match as words, never as syntax.
    """
    # A NUL would end the query string for SQLite ("unterminated string"); the tokenizer
    # separates words at a NUL as at a space, so a space matches the same captions.
    return '"' + name.replace('"', '""').replace("\x00", " ") + '"'


# The longest text a search takes: a long caption pasted whole fits; a megabyte of text
# would cost the server seconds and memory for a query no caption matches.
MAX_QUERY_CHARS = 2_000


class QueryTooLong(ValueError):
    def __init__(self, length: int) -> None:
        super().__init__(
            f"the search text is {length:,} characters long: at most {MAX_QUERY_CHARS:,}"
        )


# A word as FTS5's unicode61 tokenizer takes it, near enough: letters and digits.
TOKEN = re.compile(r"[^\W_]+")


def laion_match(text: str | None) -> str:
    """An FTS5 query for what a person typed: ``"a phrase"`` in double quotes is matched as a
    phrase, anything else word by word (every word must occur). FTS5 operators and
    punctuation are plain text, so no input is a syntax error; a text over
    ``MAX_QUERY_CHARS`` characters raises ``QueryTooLong``."""
    if text is not None and len(text) > MAX_QUERY_CHARS:
        raise QueryTooLong(len(text))
    text = (text or "").strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return fts_phrase(text[1:-1])
    words = TOKEN.findall(text)
    return " ".join(fts_phrase(word) for word in words) or fts_phrase(text)
