"""The errors the pipeline raises on purpose: each message says what was wrong and what to do."""


class ConfigurationError(ValueError):
    """A setting is missing or wrong; the message names the variable to change."""


class InvalidInputError(ValueError):
    """An input file is not what the pipeline needs."""


class StaleInputError(RuntimeError):
    """An upstream asset's output is missing or out of date; the message says what to rebuild."""


class PublishCheckError(RuntimeError):
    """The candidate database failed a check; nothing was published."""


class NotEnoughDiskError(OSError):
    """Too little free disk for the step about to run."""
