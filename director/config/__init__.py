"""The config file: a TOML file validated into frozen models.

``load_config(path)`` / ``parse_config(text)`` return a :class:`Config` or raise a
:class:`ConfigError` listing every :class:`Problem` (key path, line, expected and found).
``python -m director.config FILE`` checks a file.
"""

from director.config.errors import ConfigError, Problem
from director.config.loader import DEFAULT_PATH, check_config, load_config, parse_config
from director.config.model import (
    Config,
    DaemonSettings,
    KernelSettings,
    RealServer,
    SorryServer,
    VirtualServer,
)

__all__ = [
    "DEFAULT_PATH",
    "Config",
    "ConfigError",
    "DaemonSettings",
    "KernelSettings",
    "Problem",
    "RealServer",
    "SorryServer",
    "VirtualServer",
    "check_config",
    "load_config",
    "parse_config",
]
