"""Declared routes: the feature modules loaded on first use route exactly what routes.py says
they do, and a charger starts without loading them."""

from __future__ import annotations

import importlib
import subprocess
import sys

from controller.ocpp16 import routes
from controller.ocpp16.client import SUPPORTED_ACTIONS
from tests.procs import REPO


def test_lazy_features_register_what_they_declare() -> None:
    for module, (actions, triggers) in routes.LAZY_FEATURES.items():
        before_routes, before_triggers = set(routes.ROUTES), set(routes.TRIGGERS)
        importlib.import_module(module)
        added_routes = set(routes.ROUTES) - before_routes
        added_triggers = set(routes.TRIGGERS) - before_triggers
        # Already imported by an earlier test: then its routes are all there.
        if added_routes or added_triggers:
            assert added_routes == set(actions), module
            assert added_triggers == set(triggers), module
        assert set(actions) <= set(routes.ROUTES)
        assert set(triggers) <= set(routes.TRIGGERS)
        assert set(actions) <= SUPPORTED_ACTIONS


def test_every_declared_route_resolves() -> None:
    for module, (actions, triggers) in routes.LAZY_FEATURES.items():
        for action in actions:
            assert routes.handler(action).__module__ == module
        for message in triggers:
            found = routes.trigger_for(message)
            assert found is not None and found.__module__ == module


def test_the_client_does_not_load_feature_modules() -> None:
    features = sorted(routes.LAZY_FEATURES)
    code = (
        "import sys, controller.app, controller.ocpp16.client;"
        f"print(sorted(m for m in sys.modules if m in {features!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
