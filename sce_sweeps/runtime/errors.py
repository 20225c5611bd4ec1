"""The runtime's own error types."""


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the allowed range."""
