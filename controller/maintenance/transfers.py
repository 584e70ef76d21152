"""File transfer outcomes in neutral words, without the network libraries (imported lazily)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class DownloadErrorKind(enum.Enum):
    """Why a download failed, in neutral words (a status page or an adapter maps them)."""

    BAD_LOCATION = "bad location"
    NOT_FOUND = "not found"
    REFUSED = "refused"  # connection refused, login or access denied
    TOO_BIG = "too big"
    TRUNCATED = "truncated"
    TLS = "tls"
    TIMEOUT = "timeout"
    PROTOCOL = "protocol"  # unexpected answer, redirect loop or downgrade
    IO = "io"  # the local disk


class DownloadError(Exception):
    """A failed download; ``detail`` names no password (locations are redacted)."""

    def __init__(self, kind: DownloadErrorKind, detail: str) -> None:
        super().__init__(f"{kind.value}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size_bytes: int
