"""File transfer locations from the CSMS: parsed, checked, and printable without credentials."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

SCHEMES = ("http", "https", "ftp", "ftps")
MAX_URL_CHARS = 2048


class BadLocation(ValueError):
    """A location that is not a URL evsed can transfer a file with."""


@dataclass(frozen=True)
class Location:
    """``ftp://user:password@host:port/path`` (security whitepaper N01 remark) or http(s).
    ``path`` is as sent (percent-encoded); ``password`` stays out of repr and ``redacted``."""

    scheme: str
    host: str
    port: int
    path: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    query: str = ""

    @property
    def tls(self) -> bool:
        return self.scheme in ("https", "ftps")

    @property
    def is_ftp(self) -> bool:
        return self.scheme in ("ftp", "ftps")

    @property
    def ftp_path(self) -> str:
        """The path as an FTP server names it (percent-decoding undone)."""
        return unquote(self.path)

    def redacted(self) -> str:
        """The URL for logs and status pages: user kept, password and query dropped."""
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{user}{host}:{self.port}{self.path}"

    def http_url(self) -> str:
        """The URL to request (http/https) without credentials (sent as Basic auth)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{host}:{self.port}{self.path}{query}"


_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "ftps": 21}


def parse_location(url: object) -> Location:
    """Check a CSMS-supplied location; raise BadLocation naming the problem (never the
    password). Only the four schemes of SupportedFileTransferProtocols are accepted."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise BadLocation(f"location must be a URL of 1-{MAX_URL_CHARS} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise BadLocation("location contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadLocation(f"location is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise BadLocation(f"unsupported scheme {scheme or '(none)'!r}; use {', '.join(SCHEMES)}")
    if not parts.hostname:
        raise BadLocation("location has no host")
    return Location(
        scheme=scheme,
        host=parts.hostname,
        port=port or _DEFAULT_PORTS[scheme],
        path=parts.path or "/",
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        query=parts.query,
    )
