"""SQLite FTS5 query text: the one place that quotes a phrase."""


def fts_phrase(name: str) -> str:
    """``name`` as one FTS5 phrase: wrapped in double quotes, inner double quotes doubled.

    Inside a phrase every character is literal text for the tokenizer, so names with ``'``,
    ``*``, ``-``, ``:`` or FTS keywords (AND, OR, NOT, NEAR) match as words, never as syntax.
    """
    return '"' + name.replace('"', '""') + '"'
