"""FeedbackSupervisor (hal/contactor_feedback.py): weld and failed-to-close decisions of any
contactor driver with an auxiliary contact, on injected time (the GPIO driver's behaviour
with real threads and mock pins is tests/hal/test_hal_gpio.py)."""

from __future__ import annotations

from hal.contactor_feedback import STEADY_RECHECK_S, FeedbackFault, FeedbackSupervisor

DELAY_S = 0.3
RETRY_S = 30.0


def supervisor() -> FeedbackSupervisor:
    return FeedbackSupervisor(0.0, delay_s=DELAY_S, retry_delay_s=RETRY_S, recheck_s=0.1)


def test_welded_after_the_delay_and_cleared_after_reading_open_as_long() -> None:
    s = supervisor()
    assert s.evaluate(driven=False, feedback_closed=True, now_s=1.0).force_off is False
    assert s.evaluate(driven=False, feedback_closed=True, now_s=1.29).recheck_s <= 0.01 + 1e-9
    assert s.fault is None and s.may_drive  # a bounce shorter than the delay is nothing
    s.evaluate(driven=False, feedback_closed=True, now_s=1.3)
    assert s.fault is FeedbackFault.WELDED and not s.may_drive
    s.evaluate(driven=False, feedback_closed=False, now_s=2.0)  # reads open again ...
    assert s.fault is FeedbackFault.WELDED
    s.evaluate(driven=False, feedback_closed=False, now_s=2.3)  # ... for the delay
    assert s.fault is None and s.may_drive


def test_failed_to_close_switches_off_and_waits_for_open_command_and_retry_delay() -> None:
    s = supervisor()
    s.command(True, 1.0)
    s.coil_switched()
    assert not s.evaluate(driven=True, feedback_closed=False, now_s=1.0).force_off
    verdict = s.evaluate(driven=True, feedback_closed=False, now_s=1.3)
    assert verdict.force_off and s.fault is FeedbackFault.FAILED_TO_CLOSE
    s.coil_switched()  # the driver switched the coil off
    # Agreeing (off, open) is not enough while the runtime still asks for closed.
    s.evaluate(driven=False, feedback_closed=False, now_s=5.0)
    assert s.fault is FeedbackFault.FAILED_TO_CLOSE
    s.command(False, 6.0)
    s.evaluate(driven=False, feedback_closed=False, now_s=10.0)
    assert s.fault is FeedbackFault.FAILED_TO_CLOSE  # the retry delay runs from the open
    verdict = s.evaluate(driven=False, feedback_closed=False, now_s=6.0 + RETRY_S - 1.0)
    assert s.fault is FeedbackFault.FAILED_TO_CLOSE and verdict.recheck_s <= 0.1
    s.evaluate(driven=False, feedback_closed=False, now_s=6.0 + RETRY_S)
    assert s.fault is None and s.may_drive


def test_switching_the_coil_restarts_the_disagreement_delay() -> None:
    s = supervisor()
    s.evaluate(driven=True, feedback_closed=False, now_s=1.0)  # contact still travelling
    s.coil_switched()
    s.evaluate(driven=True, feedback_closed=False, now_s=1.2)
    s.evaluate(driven=True, feedback_closed=False, now_s=1.45)  # 0.25 s since the switch
    assert s.fault is None
    s.evaluate(driven=True, feedback_closed=True, now_s=1.46)  # it closed: all is well
    s.evaluate(driven=True, feedback_closed=True, now_s=9.0)
    assert s.fault is None


def test_nothing_pending_means_only_the_safety_net_re_read() -> None:
    """Agreeing, no fault: edges wake the driver, the periodic re-read is a safety net only
    (issue 16: quiet when idle); a disagreement is re-read at the monitor interval."""
    s = supervisor()
    assert s.evaluate(driven=False, feedback_closed=False, now_s=1.0).recheck_s == STEADY_RECHECK_S
    assert s.evaluate(driven=False, feedback_closed=True, now_s=2.0).recheck_s == 0.1
