"""The two kinds of failure a user can fix, shared by every stage. A CLI's main turns them into
`error: <message>` and exit status 2 (common.cli); anything else is a bug and keeps its traceback."""


class DataError(Exception):
    """A data file is missing or malformed; the message names it and the command that fixes it."""


class ConfigError(ValueError):
    """Options or arguments that cannot work (an unknown choice, values that do not fit together); the message
    names the option and a valid choice. A ValueError, as Python's own bad-argument errors are."""
