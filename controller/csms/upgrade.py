"""What a server (the dev CSMS, `evsed proxy`) reads from a station's WebSocket upgrade: its
identity, the last path segment (OCPP-J 3.1.1), and its HTTP Basic credentials (security
profiles 1 and 2); the inverse of ``station_url`` and ``basic_auth_header``."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote, urlsplit


def station_id_from_path(path: str) -> str:
    """The last non-empty path segment ("/ocpp/CP1" -> "CP1"), URL-decoded; "" if none."""
    segments = [s for s in urlsplit(path).path.split("/") if s]
    return unquote(segments[-1]) if segments else ""


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic ...`` header; None if it is not one."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
