"""Placeholder guest selftest: proves the reference image boots before the real selftest exists."""
