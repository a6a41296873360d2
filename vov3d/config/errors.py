"""The error raised for a config file, key or value that cannot be used."""
from vov3d.utils.errors import UserError


class ConfigError(UserError, ValueError):
    """A config file, key or value that cannot be used."""

    exit_code = 2
