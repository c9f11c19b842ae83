"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input (unknown name, out-of-range value, missing data, broken checkpoint)."""
