"""The errors the pipeline raises on purpose: each message says what was wrong and what to do."""


class ConfigurationError(ValueError):
    """A setting is missing or wrong; the message names the variable to change."""


class InvalidInputError(ValueError):
    """An input file is not what the pipeline needs."""


class StaleInputError(RuntimeError):
    """An upstream asset's output is missing or out of date; the message says what to rebuild."""


class PublishCheckError(RuntimeError):
    """The candidate database failed a check; nothing was published."""


class SourceError(RuntimeError):
    """A source (the hub, a URL) cannot give what the build needs; ``transient`` errors (no
    answer, 5xx or 429 after the retries of each request) may go away on a later attempt."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class NotEnoughDiskError(OSError):
    """Too little free disk for the step about to run."""


class DataDirBusyError(RuntimeError):
    """Another process holds the data directory's write lock."""
