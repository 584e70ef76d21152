"""Standard-library modules the WebSocket client imports but a charger's start does not use,
imported on first use instead (issue 16: start-up CPU on a small board).

websockets (pinned in pyproject.toml) imports ``importlib.metadata`` in ``websockets.version``
(used only by an unreleased checkout of websockets) and ``urllib.request`` in
``websockets.proxy`` (its proxy lookup, which ``connect()`` runs only with ``proxy=True``):
with ``email``, ``http.client``, ``zipfile`` and ``pathlib`` behind them, about 11 ms of CPU
here, a tenth of a start. ``defer(name)`` puts a placeholder module in ``sys.modules`` (and in
its parent package) before websockets is imported; the first attribute read or written on it
imports the real module, which then replaces the placeholder in both places, so later
``import`` statements and attribute reads get the real module itself. The library is not
changed; tests/csms/test_deferred_imports.py checks the pinned websockets against it.

``proxy_setting()`` gives ``connect()`` what websockets would find without importing
``urllib.request``: on Linux its ``getproxies()`` reads only ``*_proxy`` environment
variables, so without any the answer is "no proxy" (None); with one, websockets decides as
before (True)."""

from __future__ import annotations

import importlib
import os
import sys
import threading
import types
from importlib.machinery import ModuleSpec, PathFinder
from typing import Any, Literal

# What websockets imports and an `evsed run` start does not use (see above).
WEBSOCKETS_UNUSED = ("importlib.metadata", "urllib.request")

_lock = threading.RLock()


class DeferredModule(types.ModuleType):
    """A placeholder for a module not imported yet; the first use imports it."""

    def __init__(self, spec: ModuleSpec) -> None:
        super().__init__(spec.name)
        # The real spec (find_spec() answers it while the placeholder is in sys.modules);
        # no "_initializing" on it, so `import` takes the placeholder as loaded.
        self.__dict__["__spec__"] = spec

    def __getattr__(self, attr: str) -> Any:  # only for what the placeholder lacks
        return getattr(_load(self), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        # E.g. mock.patch("urllib.request.getproxies"): on the real module.
        setattr(_load(self), attr, value)

    def __delattr__(self, attr: str) -> None:
        delattr(_load(self), attr)


def _load(placeholder: DeferredModule) -> types.ModuleType:
    name = placeholder.__name__
    with _lock:  # the import system's own lock serialises the import itself
        if sys.modules.get(name) is placeholder:
            del sys.modules[name]
        real = importlib.import_module(name)
        parent, _, child = name.rpartition(".")
        if parent and getattr(sys.modules[parent], child, None) is placeholder:
            setattr(sys.modules[parent], child, real)
    return real


def defer(name: str) -> bool:
    """Import ``name`` (a standard-library module) on first use. False if it is already
    imported or cannot be found (nothing changed)."""
    with _lock:
        if name in sys.modules:
            return False
        parent, _, child = name.rpartition(".")
        package = importlib.import_module(parent) if parent else None
        path = getattr(package, "__path__", None) if package is not None else None
        spec = PathFinder.find_spec(name, path)
        if spec is None:
            return False
        placeholder = DeferredModule(spec)
        sys.modules[name] = placeholder
        if package is not None:
            setattr(package, child, placeholder)
        return True


def defer_websockets_unused() -> None:
    """Before websockets is imported: what it imports and a start does not use."""
    for name in WEBSOCKETS_UNUSED:
        defer(name)


def proxy_setting(environ: dict[str, str] | os._Environ[str] = os.environ) -> Literal[True] | None:
    """``connect(proxy=...)``: None (no proxy) where websockets' own lookup finds none for
    certain (Linux, no non-empty ``*_proxy`` variable, in any case); otherwise True (its
    lookup, ``urllib.request.getproxies()``, decides as without this)."""
    if not sys.platform.startswith("linux"):
        return True  # macOS and Windows also read system proxy settings
    for name, value in environ.items():
        if value and name.lower().endswith("_proxy"):
            return True
    return None
