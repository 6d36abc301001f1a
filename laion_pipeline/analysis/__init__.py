"""The 2022 findings as figures, charts and a report."""
