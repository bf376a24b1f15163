"""One exception type for bad input: the CLI prints its message as one line and exits 2."""


class EvomergeError(Exception):
    """A user-facing error (bad config, missing model, unknown plugin...). The message is one line."""


class ConfigError(EvomergeError):
    """A config or recipe failed validation."""
