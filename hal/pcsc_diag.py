"""The PC/SC reader's own diagnostics: which readers pcscd sees and why none may match.

Importable without pyscard (the return codes are the winscard ones, identical in pcsc-lite),
so a bring-up tool can explain a missing library as well as a stopped pcscd.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Final

# PC/SC return codes (winscard, identical in pcsc-lite).
SCARD_E_NO_SERVICE: Final = 0x8010001D
SCARD_E_SERVICE_STOPPED: Final = 0x8010001E
SCARD_E_NO_READERS_AVAILABLE: Final = 0x8010002E


def reader_matches(pattern: str | None, name: str) -> bool:
    """Case-insensitive fnmatch glob if ``pattern`` has ``*?[``, else a substring test."""
    if pattern is None:
        return True
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name.casefold(), pattern.casefold())
    return pattern.casefold() in name.casefold()


class PcscProblem(Exception):
    """The PC/SC stack is not usable: ``code`` is the PC/SC return code (0 if not one)."""

    def __init__(
        self,
        message: str,
        code: int = 0,
        readers: Iterable[str] = (),
        pattern: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code & 0xFFFFFFFF
        self.readers = list(readers)
        self.pattern = pattern


def list_readers(pattern: str | None) -> list[str]:
    """Ask pcscd directly which readers match ``pattern``; raises PcscProblem, or
    ImportError without pyscard.

    The pcsc driver itself retries quietly in its thread; a bring-up tool must say why.
    """
    from smartcard import scard

    rv, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if rv & 0xFFFFFFFF:
        raise PcscProblem(f"SCardEstablishContext: 0x{rv & 0xFFFFFFFF:08X}", rv)
    try:
        rv, readers = scard.SCardListReaders(context, [])
        if rv & 0xFFFFFFFF == SCARD_E_NO_READERS_AVAILABLE:
            readers = []
        elif rv & 0xFFFFFFFF:
            raise PcscProblem(f"SCardListReaders: 0x{rv & 0xFFFFFFFF:08X}", rv)
    finally:
        scard.SCardReleaseContext(context)
    readers = list(readers)
    matching = [r for r in readers if reader_matches(pattern, r)]
    if not matching:
        raise PcscProblem(
            "no matching reader",
            SCARD_E_NO_READERS_AVAILABLE if not readers else 0,
            readers,
            pattern,
        )
    return matching
