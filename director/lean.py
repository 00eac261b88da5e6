"""Import the parts of a dependency the daemon uses, not the whole package.

pyroute2's package ``__init__`` imports every one of its modules (IPDB, NDB, conntrack, devlink,
ethtool, nl80211, plan9, ipset, WireGuard...): about 60 of the 160 modules it loads, a tenth of
the daemon's import time, and seconds of an emulated guest's start, while the daemon uses its
rtnetlink, generic netlink and netlink message modules only (imported by their module paths:
``from pyroute2.iproute.linux import AsyncIPRoute``). :func:`lean_package` registers such a
package without running its ``__init__``: its submodules import as usual (the package's
``__path__`` is set), and a name only the ``__init__`` defines (``from pyroute2 import IPRoute``,
``pyroute2.__version__``) runs it on first use, so nothing that asks for more breaks.

Called by the composition root (:func:`director.daemon.main`) before the daemon's imports; a
package already imported is left as it is.
"""

from __future__ import annotations

import importlib.util
import sys
import threading

LEAN = ("pyroute2",)
_lock = threading.RLock()


def lean_package(name: str) -> bool:
    """Register package ``name`` without running its ``__init__``; False if it was already
    imported or is not a package (then nothing changes)."""
    with _lock:
        if name in sys.modules:
            return False
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return False
        module = importlib.util.module_from_spec(spec)
        loaded = False

        def __getattr__(attr: str) -> object:  # PEP 562: names the module does not have yet
            nonlocal loaded
            if loaded or (attr.startswith("__") and attr not in ("__version__", "__all__")):
                raise AttributeError(f"module {name!r} has no attribute {attr!r}")
            if importlib.util.find_spec(f"{name}.{attr}") is not None:
                # a submodule: ``from pkg import sub`` then imports it
                raise AttributeError(f"module {name!r} has no attribute {attr!r}")
            with _lock:
                if not loaded:
                    loaded = True
                    assert spec.loader is not None
                    spec.loader.exec_module(module)  # the whole package, as a plain import
            try:
                return module.__dict__[attr]
            except KeyError:
                raise AttributeError(f"module {name!r} has no attribute {attr!r}") from None

        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        sys.modules[name] = module
        return True


def lean_imports() -> list[str]:
    """:func:`lean_package` for each of :data:`LEAN`; the packages it registered."""
    return [name for name in LEAN if lean_package(name)]
