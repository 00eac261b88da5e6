"""Import the parts of a dependency the daemon uses, not the whole package.

Three packages' ``__init__`` import far more than the daemon uses:

- pyroute2's imports every one of its modules (IPDB, NDB, conntrack, devlink, ethtool, nl80211,
  plan9, ipset, WireGuard...): about 60 of the 160 modules it loads, while the daemon uses its
  rtnetlink, generic netlink and netlink message modules (imported by their module paths:
  ``from pyroute2.iproute.linux import AsyncIPRoute``);
- aiohttp's imports its whole HTTP client: the session, the connector (which builds two TLS
  contexts, reading the system's CA bundle, as it is imported) and the request machinery, while
  the HTTP(S) probes use aiohttp's response protocol and parser only
  (:mod:`checks.probes.http`); the metrics and status server is the daemon's own
  (:mod:`director.http`), so a config without HTTP checks or ``[peer_check]`` peers loads none
  of aiohttp;
- prometheus_client's imports its exposition module, and with it an HTTP server, a WSGI
  server, urllib's client, email and gzip, while the daemon needs the metric classes and their
  registry until the first scrape (:mod:`director.metrics` renders with
  ``prometheus_client.exposition`` then).

:func:`lean_package` registers such a package without running its ``__init__``: its submodules
import as usual (the package's ``__path__`` is set), and a name only the ``__init__`` defines
(``from pyroute2 import IPRoute``, ``aiohttp.ClientError``) runs it on first use, so nothing
that asks for more breaks; :func:`load_whole` runs it at once (the daemon does, for aiohttp,
when the config has HTTP, HTTPS or Exchange checks: their error paths name aiohttp's
exceptions, and the import is better paid at start than on a probe's first failure). A module
of the package that reads a constant from the package (aiohttp's ``from . import __version__``)
gets it from the ``__init__``'s text, without running it.

Called by the composition root (:func:`director.daemon.main`) before the daemon's imports; a
package already imported is left as it is. Seconds of an emulated guest's start; see
``bench/startup.py``.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import threading
from pathlib import Path
from types import ModuleType

# package -> the constants its modules read from it (``NAME = "text"`` in its __init__)
LEAN: dict[str, tuple[str, ...]] = {
    "pyroute2": (),
    "aiohttp": ("__version__",),
    "prometheus_client": (),
}
PACKAGE_NAMES = ("__version__", "__all__")  # dunders a package __init__ defines
_lock = threading.RLock()
_whole: dict[str, ModuleType] = {}  # lean packages -> their module, until their __init__ runs


def lean_package(name: str, constants: tuple[str, ...] = ()) -> bool:
    """Register package ``name`` without running its ``__init__``; False if it was already
    imported, is not a package, or a constant is not found as ``NAME = "text"`` in its
    ``__init__`` (then nothing changes)."""
    with _lock:
        if name in sys.modules:
            return False
        spec = importlib.util.find_spec(name)
        if (
            spec is None
            or spec.loader is None
            or spec.origin is None
            or spec.submodule_search_locations is None
        ):
            return False
        module = importlib.util.module_from_spec(spec)
        if constants:
            try:
                text = Path(spec.origin).read_text(encoding="utf-8")
            except OSError:
                return False
            for constant in constants:
                found = re.search(rf"^{re.escape(constant)} = \"([^\"\n]*)\"$", text, re.M)
                if found is None:
                    return False
                setattr(module, constant, found[1])

        def __getattr__(attr: str) -> object:  # PEP 562: names the module does not have yet
            if name not in _whole or (attr.startswith("__") and attr not in PACKAGE_NAMES):
                raise AttributeError(f"module {name!r} has no attribute {attr!r}")
            if importlib.util.find_spec(f"{name}.{attr}") is not None:
                # a submodule: ``from pkg import sub`` then imports it
                raise AttributeError(f"module {name!r} has no attribute {attr!r}")
            load_whole(name)
            try:
                return module.__dict__[attr]
            except KeyError:
                raise AttributeError(f"module {name!r} has no attribute {attr!r}") from None

        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        sys.modules[name] = module
        _whole[name] = module
        return True


def load_whole(name: str) -> None:
    """Run the ``__init__`` of a package :func:`lean_package` registered (once); a package
    imported as usual is whole already."""
    with _lock:
        module = _whole.pop(name, None)
        if module is not None and module.__spec__ is not None and module.__spec__.loader:
            module.__spec__.loader.exec_module(module)


PYDANTIC_PLUGIN_LOADER = "pydantic.plugin._loader"


def no_pydantic_plugins() -> bool:
    """Have pydantic find no plugins without looking for them; False if its plugin loader was
    imported already.

    As pydantic builds a model's validator it asks its plugin loader for plugins: that module
    imports ``importlib.metadata`` (and with it email, zipfile, csv...) and reads the entry
    points of every installed distribution, a twentieth of the daemon's imports. The daemon
    uses no pydantic plugin and its package installs none (``debian/constraints.txt``), so
    the loader is registered as one that has none (the answer pydantic itself gives with
    ``PYDANTIC_DISABLE_PLUGINS=__all__``, which still imports the loader)."""
    with _lock:
        if PYDANTIC_PLUGIN_LOADER in sys.modules:
            return False
        module = ModuleType(PYDANTIC_PLUGIN_LOADER, no_pydantic_plugins.__doc__)

        def get_plugins() -> tuple[()]:
            return ()

        module.get_plugins = get_plugins  # type: ignore[attr-defined]
        sys.modules[PYDANTIC_PLUGIN_LOADER] = module
        return True


def lean_imports() -> list[str]:
    """:func:`lean_package` for each of :data:`LEAN` (the packages it registered), and
    :func:`no_pydantic_plugins`."""
    no_pydantic_plugins()
    return [name for name, constants in LEAN.items() if lean_package(name, constants)]
