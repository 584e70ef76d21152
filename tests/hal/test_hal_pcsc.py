"""Driver tests of hal/pcsc.py against a real pcscd with the vsmartcard-vpcd virtual reader.

Every test starts its own pcscd (socket-activated on a private socket, private vpcd port,
see tests/vpcd_card.py) and kills it in teardown, also when the test fails. Virtual cards
are inserted by connecting to vpcd and removed by disconnecting.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hal.registry import DriverConfigError, DriverContext, create_driver
from tests.vpcd_card import PcscdProcess, VirtualCard, missing_requirements

_MISSING = missing_requirements()
pytestmark = pytest.mark.skipif(
    _MISSING is not None, reason=f"pcscd + vsmartcard-vpcd + pyscard needed: {_MISSING}"
)

if _MISSING is None:
    from smartcard import scard

    from hal.pcsc import PcscTokenReader, reader_matches

UID = "04A1B2C3D4E5F6"
OTHER_UID = "DEADBEEF"
FAST_RETRY_S = 0.2
EVENT_TIMEOUT_S = 5.0  # pcscd polls vpcd every 0.4 s; generous for loaded CI machines
QUIET_S = 1.0  # > 2 presence polls: long enough for a wrongly repeated read to show


class Tokens:
    """Collects on_token calls from the driver thread."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, uid: str) -> None:
        with self._cond:
            self.values.append(uid)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout_s: float = EVENT_TIMEOUT_S) -> list[str]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.values) >= count, timeout_s)
            return list(self.values)


@pytest.fixture(scope="session")
def pcsc_socket_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One socket path per test process: libpcsclite reads PCSCLITE_CSOCK_NAME only once."""
    workdir = tmp_path_factory.mktemp("pcscd")
    old = os.environ.get("PCSCLITE_CSOCK_NAME")
    os.environ["PCSCLITE_CSOCK_NAME"] = str(workdir / "pcscd.comm")
    yield workdir
    if old is None:
        os.environ.pop("PCSCLITE_CSOCK_NAME", None)
    else:
        os.environ["PCSCLITE_CSOCK_NAME"] = old


@pytest.fixture
def pcscd(pcsc_socket_dir: Path) -> Iterator[PcscdProcess]:
    daemon = PcscdProcess(pcsc_socket_dir)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()  # SIGTERM, SIGKILL after 5 s


@pytest.fixture
def cards() -> Iterator[list[VirtualCard]]:
    """Cards to remove in teardown (created by the test, appended here)."""
    created: list[VirtualCard] = []
    yield created
    for card in created:
        card.remove()


@pytest.fixture
def make_reader() -> Iterator[Callable[..., tuple[PcscTokenReader, Tokens]]]:
    started: list[PcscTokenReader] = []

    def make(**kwargs: object) -> tuple[PcscTokenReader, Tokens]:
        kwargs.setdefault("retry_interval_s", FAST_RETRY_S)
        reader = PcscTokenReader(**kwargs)  # type: ignore[arg-type]
        tokens = Tokens()
        reader.start(tokens)
        started.append(reader)
        return reader, tokens

    yield make
    for reader in started:
        reader.stop()


def new_card(
    cards: list[VirtualCard], daemon: PcscdProcess, uid: str = UID, **kwargs: object
) -> VirtualCard:
    card = VirtualCard(uid, daemon.port, **kwargs)  # type: ignore[arg-type]
    cards.append(card)
    return card


def wait_reader_state(reader_name: str, present: bool, timeout_s: float = EVENT_TIMEOUT_S) -> None:
    """Block until pcscd itself reports the card on ``reader_name`` present/absent."""
    rv, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert rv == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(rv)
    try:
        state = scard.SCARD_STATE_UNAWARE
        deadline = time.monotonic() + timeout_s
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            assert left_ms > 0, f"{reader_name}: card never became present={present}"
            rv, result = scard.SCardGetStatusChange(context, left_ms, [(reader_name, state)])
            if rv == scard.SCARD_E_TIMEOUT:
                continue
            assert rv == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(rv)
            state = result[0][1] & ~scard.SCARD_STATE_CHANGED
            if bool(state & scard.SCARD_STATE_PRESENT) == present:
                return
    finally:
        scard.SCardReleaseContext(context)


def wait_until(predicate: Callable[[], bool], timeout_s: float = EVENT_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# --- detection and suppression ---------------------------------------------------------


def test_card_is_reported_once_while_it_stays_and_again_after_removal(
    pcscd: PcscdProcess, cards: list[VirtualCard], make_reader: Callable[..., tuple]
) -> None:
    reader, tokens = make_reader()
    card = new_card(cards, pcscd)
    card.insert()
    assert tokens.wait_for(1) == [UID]
    assert tokens.threads == {"pcsc-reader"}  # a foreign thread, as the interface says
    assert card.apdus == [bytes.fromhex("FFCA000000")]

    time.sleep(QUIET_S)  # pcscd keeps polling the card; the driver must stay quiet
    assert tokens.values == [UID]

    card.remove()
    wait_reader_state(pcscd.reader_names[0], present=False)
    time.sleep(0.1)
    assert tokens.values == [UID]

    card.insert()
    assert tokens.wait_for(2) == [UID, UID]
    time.sleep(QUIET_S)
    assert tokens.values == [UID, UID]


def test_card_already_on_the_reader_at_start_is_reported(
    pcscd: PcscdProcess, cards: list[VirtualCard], make_reader: Callable[..., tuple]
) -> None:
    card = new_card(cards, pcscd)
    card.insert()
    wait_reader_state(pcscd.reader_names[0], present=True)
    _reader, tokens = make_reader()
    assert tokens.wait_for(1) == [UID]


def test_lsb_byte_order_reverses_the_uid(
    pcscd: PcscdProcess, cards: list[VirtualCard], make_reader: Callable[..., tuple]
) -> None:
    _reader, tokens = make_reader(byte_order="lsb")
    new_card(cards, pcscd, "04a1b2c3").insert()
    assert tokens.wait_for(1) == ["C3B2A104"]


def test_card_failing_get_data_is_logged_and_ignored(
    pcscd: PcscdProcess,
    cards: list[VirtualCard],
    make_reader: Callable[..., tuple],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="hal.pcsc")
    reader, tokens = make_reader()
    bad = new_card(cards, pcscd, uid_status=bytes.fromhex("6A81"))
    bad.insert()
    wait_until(lambda: "6A81" in caplog.text)
    time.sleep(QUIET_S)
    assert tokens.values == []
    assert len(bad.apdus) == 1  # not retried while it stays on the reader
    assert reader._thread is not None and reader._thread.is_alive()

    bad.remove()
    wait_reader_state(pcscd.reader_names[0], present=False)
    new_card(cards, pcscd, OTHER_UID).insert()
    assert tokens.wait_for(1) == [OTHER_UID]


def test_wrong_le_answer_is_retried_with_the_length_the_card_asks_for(
    pcscd: PcscdProcess, cards: list[VirtualCard], make_reader: Callable[..., tuple]
) -> None:
    def strict(apdu: bytes) -> bytes:
        if apdu == bytes.fromhex("FFCA000004"):
            return bytes.fromhex("11223344") + b"\x90\x00"
        return bytes.fromhex("6C04")

    _reader, tokens = make_reader()
    card = new_card(cards, pcscd, "11223344", responder=strict)
    card.insert()
    assert tokens.wait_for(1) == ["11223344"]
    assert card.apdus == [bytes.fromhex("FFCA000000"), bytes.fromhex("FFCA000004")]


# --- reader selection -------------------------------------------------------------------


def test_default_watches_the_first_reader_and_a_pattern_selects_another(
    pcscd: PcscdProcess, cards: list[VirtualCard], make_reader: Callable[..., tuple]
) -> None:
    _first, first_tokens = make_reader()
    _second, second_tokens = make_reader(reader="*00 01")
    new_card(cards, pcscd, UID, slot=1).insert()
    assert second_tokens.wait_for(1) == [UID]
    new_card(cards, pcscd, OTHER_UID, slot=0).insert()
    assert first_tokens.wait_for(1) == [OTHER_UID]
    time.sleep(QUIET_S)
    assert first_tokens.values == [OTHER_UID]
    assert second_tokens.values == [UID]


def test_pattern_matching_nothing_waits_and_picks_the_reader_up_when_it_appears(
    pcsc_socket_dir: Path,
    cards: list[VirtualCard],
    make_reader: Callable[..., tuple],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hal.pcsc")
    # No reader at all first, then only readers that do not match.
    daemon = PcscdProcess(pcsc_socket_dir, with_reader=False)
    daemon.start()
    try:
        reader, tokens = make_reader(reader="contactless")
        wait_until(lambda: "waiting for one" in caplog.text)

        daemon.stop()
        daemon.with_reader = True
        daemon.start()
        new_card(cards, daemon).insert()
        wait_reader_state(daemon.reader_names[0], present=True)
        time.sleep(QUIET_S)
        assert tokens.values == []
        assert reader._thread is not None and reader._thread.is_alive()
        assert caplog.text.count("waiting for one") == 1  # logged once, not per retry

        # The reader that matches appears (pcscd restarted with it, as after plugging in).
        for card in cards:
            card.remove()
        daemon.stop()
        daemon.friendly_name = "ACME Contactless Reader"
        daemon.start()
        new_card(cards, daemon).insert()
        assert tokens.wait_for(1) == [UID]
        assert "watching PC/SC reader 'ACME Contactless Reader 00 00'" in caplog.text
    finally:
        daemon.stop()


# --- recovery ---------------------------------------------------------------------------


def test_pcscd_restart_is_survived_and_the_next_card_is_read(
    pcscd: PcscdProcess,
    cards: list[VirtualCard],
    make_reader: Callable[..., tuple],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hal.pcsc")
    reader, tokens = make_reader()
    card = new_card(cards, pcscd)
    card.insert()
    assert tokens.wait_for(1) == [UID]

    pcscd.stop(kill=True)  # a crash: the card's vpcd connection dies with it
    card.remove()
    wait_until(lambda: "lost pcscd" in caplog.text)
    time.sleep(3 * FAST_RETRY_S)  # a few failed reconnects: must not log each one
    assert caplog.text.count("lost pcscd") == 1
    assert "pcscd not reachable" not in caplog.text

    pcscd.start()
    wait_until(reader.connected.is_set)
    assert caplog.text.count("connected to pcscd again") == 1
    new_card(cards, pcscd, OTHER_UID).insert()
    assert tokens.wait_for(2) == [UID, OTHER_UID]

    # Graceful restart, and a card presented again afterwards: reported.
    pcscd.stop()
    for old in cards:
        old.remove()
    pcscd.start()
    card.insert()
    assert tokens.wait_for(3) == [UID, OTHER_UID, UID]


def test_card_that_stays_on_the_reader_across_a_pcscd_restart_is_not_reported_again(
    pcscd: PcscdProcess,
    cards: list[VirtualCard],
    make_reader: Callable[..., tuple],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A second report would be a second tap (which stops a running transaction)."""
    caplog.set_level(logging.DEBUG, logger="hal.pcsc")
    # Slow retries, so that pcscd is back with the card on it before the driver reconnects
    # (vpcd loses the card's connection with pcscd; a real reader keeps the card).
    reader, tokens = make_reader(retry_interval_s=2.5)
    card = new_card(cards, pcscd)
    card.insert()
    assert tokens.wait_for(1) == [UID]

    pcscd.stop(kill=True)
    card.remove()
    wait_until(lambda: "lost pcscd" in caplog.text)
    pcscd.start()
    card.insert()
    wait_reader_state(pcscd.reader_names[0], present=True)
    assert not reader.connected.is_set(), "driver reconnected too early for this test"
    wait_until(reader.connected.is_set)
    time.sleep(QUIET_S)
    assert tokens.values == [UID]
    assert "not reported again" in caplog.text

    # Taken away and presented again: reported.
    card.remove()
    wait_reader_state(pcscd.reader_names[0], present=False)
    card.insert()
    assert tokens.wait_for(2) == [UID, UID]


def test_pcscd_not_running_at_start_is_waited_for(
    pcsc_socket_dir: Path,
    cards: list[VirtualCard],
    make_reader: Callable[..., tuple],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hal.pcsc")
    daemon = PcscdProcess(pcsc_socket_dir)
    try:
        reader, tokens = make_reader()
        wait_until(lambda: "pcscd not reachable" in caplog.text)
        time.sleep(3 * FAST_RETRY_S)
        assert caplog.text.count("pcscd not reachable") == 1
        assert not reader.connected.is_set()

        daemon.start()
        new_card(cards, daemon).insert()
        assert tokens.wait_for(1) == [UID]
    finally:
        daemon.stop()


def test_stop_is_prompt_while_waiting_for_events_and_while_backing_off(
    pcscd: PcscdProcess,
) -> None:
    reader = PcscTokenReader(retry_interval_s=30.0)
    reader.start(Tokens())
    wait_until(reader.connected.is_set)
    thread = reader._thread
    assert thread is not None
    time.sleep(0.2)  # let it block in SCardGetStatusChange
    began = time.monotonic()
    reader.stop()
    assert time.monotonic() - began < 1.0
    assert not thread.is_alive()

    pcscd.stop()
    reader = PcscTokenReader(retry_interval_s=30.0)
    reader.start(Tokens())
    thread = reader._thread
    assert thread is not None
    time.sleep(0.3)  # in its 30 s back-off now
    began = time.monotonic()
    reader.stop()
    assert time.monotonic() - began < 1.0
    assert not thread.is_alive()


def test_stop_from_the_callback_does_not_deadlock(
    pcscd: PcscdProcess, cards: list[VirtualCard]
) -> None:
    reader = PcscTokenReader()
    seen = threading.Event()

    def on_token(uid: str) -> None:
        reader.stop()
        seen.set()

    reader.start(on_token)
    thread = reader._thread
    assert thread is not None
    new_card(cards, pcscd).insert()
    assert seen.wait(EVENT_TIMEOUT_S)
    thread.join(2.0)
    assert not thread.is_alive()


# --- configuration ----------------------------------------------------------------------


def _create(settings: dict[str, object]) -> object:
    return create_driver("reader", "pcsc", settings, DriverContext(0, key_prefix="reader"))


def test_config_builds_the_reader_with_its_settings() -> None:
    reader = _create(
        {"driver": "pcsc", "reader": "ACR122*", "byte_order": "lsb", "retry_interval_s": 2}
    )
    assert isinstance(reader, PcscTokenReader)
    assert (reader.reader_pattern, reader.byte_order, reader.retry_interval_s) == (
        "ACR122*",
        "lsb",
        2.0,
    )
    default = _create({"driver": "pcsc"})
    assert isinstance(default, PcscTokenReader)
    assert (default.reader_pattern, default.byte_order, default.retry_interval_s) == (
        None,
        "msb",
        1.0,
    )


@pytest.mark.parametrize(
    ("settings", "key", "fragment"),
    [
        ({"byte_order": "big"}, "reader.byte_order", "'lsb', 'msb'"),
        ({"byte_order": 1}, "reader.byte_order", "must be a string"),
        ({"reader": ""}, "reader.reader", "must not be empty"),
        ({"reader": 3}, "reader.reader", "must be a string"),
        ({"retry_interval_s": 0}, "reader.retry_interval_s", "at least 0.05"),
        ({"retry_interval_s": "1"}, "reader.retry_interval_s", "must be a number"),
        ({"byteorder": "lsb"}, "reader.byteorder", "did you mean 'reader.byte_order'"),
        ({"port": 1}, "reader.port", "unknown setting"),
    ],
)
def test_config_errors_name_the_dotted_key(
    settings: dict[str, object], key: str, fragment: str
) -> None:
    with pytest.raises(DriverConfigError) as info:
        _create({"driver": "pcsc", **settings})
    assert info.value.key == key
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        (None, "ACS ACR122U PICC Interface 00 00", True),
        ("acr122", "ACS ACR122U PICC Interface 00 00", True),
        ("ACS*PICC*", "ACS ACR122U PICC Interface 00 00", True),
        ("ACS*SAM*", "ACS ACR122U PICC Interface 00 00", False),
        ("*00 01", "Virtual PCD 00 00", False),
        ("identiv", "Virtual PCD 00 00", False),
    ],
)
def test_reader_name_patterns(pattern: str | None, name: str, expected: bool) -> None:
    assert reader_matches(pattern, name) is expected
