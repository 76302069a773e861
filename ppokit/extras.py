"""The optional parts of ppokit and the one check for them: :func:`require`.

The core install (``pip install ppokit``) holds what ``ppokit train`` needs; each extra below adds
a feature's packages. A feature whose extra is missing raises :class:`ConfigError` with one line
that names the pip command (the CLI prints it and exits with status 2).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ppokit.errors import ConfigError, first_line


def install_command(extra: str) -> str:
    """``pip install 'ppokit[EXTRA]'``."""
    return f"pip install 'ppokit[{extra}]'"


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import and return ``module``; ConfigError naming ``extra``'s pip command when it is missing.

    ``feature`` says what needs it (``"ppokit plot"``), e.g. ``ppokit plot needs matplotlib:
    pip install 'ppokit[plot]'``.
    """
    package = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        broken = "" if error.name in (None, package, module) else f" (importing it failed: {first_line(error)})"
        raise ConfigError(f"{feature} needs the {package} package{broken}: {install_command(extra)}") from None
