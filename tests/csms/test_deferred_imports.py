"""csms/deferred.py: what websockets imports and a start does not use (importlib.metadata,
urllib.request) is imported on first use, and nothing a user of them sees changes: the real
module on first use, through `import`, `from ... import`, find_spec and mock.patch; and a
charger still connects through the HTTP proxy its environment names (websockets' own proxy
lookup, as before)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest
from websockets.uri import parse_uri

from controller.csms.deferred import proxy_setting
from controller.dev.devcsms import DevCsms
from tests.procs import REPO

# In a fresh interpreter: the WebSocket connection module, then every way of using the two
# deferred modules. Prints "ok" at the end.
SCRIPT = r"""
import importlib.util, sys, types
from unittest import mock
import controller.csms.connection  # imports websockets
from controller.csms.deferred import DeferredModule
import websockets

for name in ("importlib.metadata", "urllib.request"):
    assert isinstance(sys.modules[name], DeferredModule), name
for name in ("http.client", "email.message", "email.parser", "zipfile"):
    assert name not in sys.modules, name

# find_spec answers the real spec while the placeholder stands in.
spec = importlib.util.find_spec("urllib.request")
assert spec.origin.endswith("request.py") and spec.loader is not None, spec

# mock.patch on the placeholder patches the real module.
import urllib.request
with mock.patch("urllib.request.getproxies", return_value={"http": "http://p:1"}):
    assert urllib.request.getproxies() == {"http": "http://p:1"}
    assert sys.modules["urllib.request"].getproxies() == {"http": "http://p:1"}
real = sys.modules["urllib.request"]
assert type(real) is types.ModuleType and urllib.request is real
assert real.getproxies.__module__ == "urllib.request"  # the patch undone on the real one

# `from ... import` and attribute reads: the real importlib.metadata, which then replaces
# the placeholder in sys.modules and on its package.
from importlib.metadata import version
assert version("websockets") == websockets.__version__
import importlib
assert type(importlib.metadata) is types.ModuleType
assert sys.modules["importlib.metadata"] is importlib.metadata
assert importlib.metadata.version("websockets") == websockets.version.version
print("ok")
"""


def test_the_deferred_modules_are_the_real_ones_on_first_use() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"PATH": "/usr/bin", "HOME": "/root"}, None),
        ({"http_proxy": ""}, None),  # empty: urllib ignores it too
        ({"HTTPS_PROXY": "http://proxy:3128"}, True),
        ({"http_proxy": "http://proxy:3128"}, True),
        ({"ALL_PROXY": "socks5h://proxy:1080"}, True),
        ({"no_proxy": "localhost"}, True),  # websockets decides
    ],
)
def test_proxy_setting_is_none_only_where_websockets_finds_no_proxy(
    environ: dict[str, str], expected: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """None only where websockets' own lookup (urllib.request.getproxies on Linux) finds
    no proxy for a ws:// or wss:// CSMS; otherwise True: websockets decides as before."""
    if not sys.platform.startswith("linux"):
        assert proxy_setting(environ) is True
        return
    assert proxy_setting(environ) is expected
    for name in [n for n in os.environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    from websockets.proxy import get_proxy

    for url in ("ws://csms.example:80/ocpp", "wss://csms.example/ocpp"):
        if expected is None:
            assert get_proxy(parse_uri(url)) is None


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on 127.0.0.1: records each CONNECT target and relays."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> ConnectProxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        method, target, _ = head.split("\r\n", 1)[0].split(" ", 2)
        if method != "CONNECT":
            writer.close()
            return
        self.targets.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_a_charger_connects_through_the_http_proxy_its_environment_names(
    charger: Any, csms: DevCsms, monkeypatch: pytest.MonkeyPatch
) -> None:
    """http_proxy set (a charger on a site network behind a proxy): the WebSocket goes
    through it (CONNECT to the CSMS) and the charger boots, as websockets does by itself."""
    async with ConnectProxy() as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        h = await charger(csms)
        port = csms.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
        assert proxy.targets and proxy.targets[0].endswith(":" + port)
        assert h.frames("BootNotification")
