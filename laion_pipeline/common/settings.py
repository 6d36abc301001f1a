"""Reading the environment variables a person sets: one way to read each kind of value, each
refusal naming the variable and what to set it to."""

from __future__ import annotations

import os

from laion_pipeline.common.errors import ConfigurationError


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (a worker started with `taskset`,
    a container's cpuset), else every core of the machine (what a setting of one per core
    means)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


YES = ("1", "true", "yes", "on")
NO = ("0", "false", "no", "off")


def yes_no(name: str, value: str | None, default: bool) -> bool:
    """A yes/no setting: `1`, `true`, `yes` or `on` (any case) is yes, `0`, `false`, `no` or
    `off` is no, unset or empty is ``default``; anything else is refused, naming the setting
    (`maybe` is no answer)."""
    text = (value or "").strip().lower()
    if not text:
        return default
    if text in YES or text in NO:
        return text in YES
    raise ConfigurationError(
        f"{name}={value!r}: set it to {' or '.join(YES[:2])} for yes, {' or '.join(NO[:2])} for no"
    )


def whole_number(
    name: str, value: str | None, default: int, meaning: str, *, at_least: int = 1
) -> int:
    """A whole number setting of at least `at_least` (`20_000` and `20,000` read as 20000),
    `default` when unset."""
    if not (value or "").strip():
        return default
    text = value.strip().replace("_", "").replace(",", "")
    if not (text.isascii() and text.isdigit()) or int(text) < at_least:  # 0-9 only
        raise ConfigurationError(f"{name}={value!r}: set it to {meaning}")
    return int(text)
