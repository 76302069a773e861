"""The algorithms, found by the registry: every module here that defines ``ALGORITHM`` (an
:class:`~ppokit.algos.registry.AlgoSpec`) is one ``--algo`` choice. See :mod:`ppokit.algos.registry`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

from ppokit.algos.registry import AlgoSpec


def discover(package: str, paths: Iterable[str]) -> dict[str, AlgoSpec]:
    """``name -> spec`` of the modules of ``package`` (found in ``paths``) that define ``ALGORITHM``,
    in module-name order."""
    found: dict[str, AlgoSpec] = {}
    for module_info in sorted(pkgutil.iter_modules(list(paths)), key=lambda info: info.name):
        module = importlib.import_module(f"{package}.{module_info.name}")
        spec = getattr(module, "ALGORITHM", None)
        if isinstance(spec, AlgoSpec):
            found[spec.name] = spec
    return found


ALGOS: dict[str, AlgoSpec] = discover(__name__, __path__)
"""``--algo`` name -> its spec: ppo, ppo-kl, trpo, vpg."""
