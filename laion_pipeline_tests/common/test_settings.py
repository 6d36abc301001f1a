"""Settings read from the environment: exactly what they say, or refused naming the setting."""

import pytest

from laion_pipeline.common.errors import ConfigurationError
from laion_pipeline.common.settings import whole_number, yes_no

pytestmark = pytest.mark.fast


def test_a_yes_no_setting_is_yes_no_or_unset_and_anything_else_is_refused():
    for value in ("1", "true", "YES", " on "):
        assert yes_no("LAION_KEEP_RAW", value, False) is True
    for value in ("0", "false", "No", "off"):
        assert yes_no("LAION_KEEP_RAW", value, True) is False
    assert yes_no("LAION_KEEP_RAW", None, True) is True and yes_no("X", "", False) is False
    for value in ("maybe", "2", "y", "nope"):
        with pytest.raises(ConfigurationError, match=r"LAION_KEEP_RAW='.*': set it to 1 or true"):
            yes_no("LAION_KEEP_RAW", value, True)


def test_a_whole_number_is_written_in_the_digits_0_to_9():
    assert whole_number("N", "20,000", 1, "a number") == 20_000
    assert whole_number("N", None, 7, "a number") == 7
    for value in ("\uff12", "\u0662", "1.5", "-3", "0"):  # full-width 2, Arabic-Indic 2
        with pytest.raises(ConfigurationError, match="N="):
            whole_number("N", value, 1, "a number")
