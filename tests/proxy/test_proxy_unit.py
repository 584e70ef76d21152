"""systemd/evsed-proxy.service: `systemd-analyze verify` finds nothing, and its ExecStart=
is a command line `evsed proxy` accepts."""

from __future__ import annotations

from pathlib import Path

from controller.cli import build_parser
from tests.ops.test_systemd_units import SHIPPED_EXE, needs_analyze, one, unit_text, verify

UNIT = "evsed-proxy.service"


@needs_analyze
def test_proxy_unit_verifies(tmp_path: Path) -> None:
    assert verify(tmp_path, {UNIT: unit_text(UNIT)}) == (0, "")


def test_proxy_unit_runs_evsed_proxy_with_its_credential() -> None:
    text = unit_text(UNIT)
    exe, *argv = one(text, "Service", "ExecStart").split()
    assert exe == SHIPPED_EXE
    args = build_parser(with_ops=False).parse_args(argv)
    assert args.cmd == "proxy" and args.config == "${CREDENTIALS_DIRECTORY}/proxy.toml"
    assert one(text, "Service", "LoadCredential") == "proxy.toml:/etc/evsed/proxy.toml"
    assert one(text, "Service", "RestartPreventExitStatus") == "2"  # config errors
    assert one(text, "Service", "DynamicUser") == "yes"
