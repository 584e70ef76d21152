"""The proxy's configuration: ownership conflicts are errors naming both backends (checked
per charger with core.ownership), and the rest of the file is checked before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.cli import main
from controller.proxy.config import ProxyConfigError, load, parse

BILLING = {"name": "billing", "url": "wss://billing.example/ocpp", "role": "primary"}


def doc(*backends: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"backends": list(backends), "chargers": [{"id": "CP-1"}], **extra}


def test_shared_command_given_to_two_backends_names_both() -> None:
    with pytest.raises(ProxyConfigError) as err:
        parse(
            doc(
                BILLING,
                {"name": "em", "url": "ws://em/", "role": "energy-manager", "allow": ["reset"]},
                {"name": "svc", "url": "ws://svc/", "role": "mirror", "allow": ["reset"]},
            )
        )
    assert "'em'" in str(err.value) and "'svc'" in str(err.value) and "reset" in str(err.value)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (doc({**BILLING, "role": "mirror"}), "exactly one backend must be the primary"),
        (doc(BILLING, {**BILLING, "role": "mirror"}), "used twice"),
        (doc(BILLING, {"name": "m", "url": "http://x/", "role": "mirror"}), "ws:// or wss://"),
        (doc(BILLING, {"name": "m", "url": "ws://x/", "role": "boss"}), "unknown role"),
        (doc(BILLING, {"name": "m", "url": "ws://x/", "allow": ["fly"]}), "unknown command"),
        (doc(BILLING, chargers=[{"id": "CP-1", "backends": ["nope"]}]), "unknown backend"),
        (doc(BILLING, chargers=[{"id": "CP-1"}, {"id": "CP-1"}]), "listed twice"),
        (doc(BILLING, proxy={"tls_cert": "/x.pem"}), "come together"),
        (doc(BILLING, proxy={"listen_port": "80"}), "whole number"),
        (doc(BILLING, proxy={"colour": 1}), "unknown key"),
        (doc(BILLING, proxy={"linger_s": -1}), "linger_s must be a number >= 0"),
        (doc(BILLING, proxy={"linger_s": "5m"}), "linger_s must be a number >= 0"),
        (doc(BILLING, proxy={"linger_s": float("nan")}), "linger_s must be a number >= 0"),
        ({"backends": [BILLING]}, "nobody may connect"),
    ],
)
def test_bad_configurations_are_refused(data: dict[str, Any], words: str) -> None:
    with pytest.raises(ProxyConfigError, match=words):
        parse(data)


def test_per_charger_backends_and_passwords() -> None:
    """A charger may use a subset of the backends (still exactly one primary); a backend's
    per-charger password overrides its common one; allow_unknown lets any identity in with
    every backend."""
    config = parse(
        {
            "proxy": {"allow_unknown": True},
            "backends": [
                {**BILLING, "password": "common", "passwords": {"CP-2": "own"}},
                {"name": "watch", "url": "ws://w/", "role": "mirror"},
            ],
            "chargers": [{"id": "CP-2", "password": "p2", "backends": ["billing"]}],
        }
    )
    cp2 = config.charger("CP-2")
    assert cp2 is not None and [b.name for b in cp2.backends] == ["billing"]
    assert cp2.primary.password_for("CP-2") == "own"
    assert cp2.primary.password_for("CP-9") == "common"
    other = config.charger("CP-9")
    assert other is not None and other.password is None and len(other.secondaries) == 1
    assert parse(doc(BILLING)).charger("CP-9") is None


def test_cli_reports_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text('[[backends]]\nname = "b"\nurl = "ws://b/"\nrole = "mirror"\n')
    assert main(["proxy", "--config", str(path)]) == 2
    assert "exactly one backend must be the primary" in capsys.readouterr().err
    with pytest.raises(ProxyConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")


def test_linger_default_and_zero() -> None:
    """proxy.linger_s: 300 s unless set; 0 (links close with the charger's connection) is
    allowed."""
    assert parse(doc(BILLING)).linger_s == 300.0
    assert parse(doc(BILLING, proxy={"linger_s": 0})).linger_s == 0.0
