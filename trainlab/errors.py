"""The one error type trainlab raises for bad input.

The CLI turns a TrainlabError into a single line on stderr and a non-zero exit, so the message must
name the thing that was wrong and say what was expected.
"""


class TrainlabError(Exception):
    """Bad input: an unknown name, a corrupt file, a wrong shape, an out-of-range value."""


class ConfigError(TrainlabError, ValueError):
    """A configuration key or value that is unknown or invalid."""


class DataError(TrainlabError):
    """A dataset that is missing, corrupt or inconsistent."""
