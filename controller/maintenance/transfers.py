"""File transfer outcomes in neutral words, without the network libraries."""

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


class UploadResult(enum.Enum):
    """How an upload ended, in neutral words (each adapter spells them its own way)."""

    UPLOADED = "uploaded"
    FAILED = "failed"  # network, timeout, server error: worth a retry
    PERMISSION_DENIED = "permission_denied"  # login refused, no write permission
    BAD_MESSAGE = "bad_message"  # the server did not understand the request / protocol
    NOT_SUPPORTED = "not_supported"  # the server does not support the operation

    @property
    def final(self) -> bool:
        """True when trying again cannot help (only FAILED is retried)."""
        return self is not UploadResult.FAILED


@dataclass(frozen=True)
class UploadOutcome:
    result: UploadResult
    detail: str = ""  # for the log: never the password (Location.redacted() only)
    sent_bytes: int = 0
