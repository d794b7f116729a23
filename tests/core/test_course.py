"""Every decision of the upstream course, without trio or a socket (sync)."""

from __future__ import annotations

import math

import pytest

from liveproxy.contract.endings import UPSTREAM_CLOSED
from liveproxy.contract.errors import UpstreamFailed, UpstreamRejected, UpstreamUnavailable
from liveproxy.contract.translate import UpstreamEvent
from liveproxy.core.course import (
    DRAIN_GRACE,
    DRAIN_QUIET,
    RESUME_BACKOFF,
    Activity,
    Course,
    Drain,
    Phase,
    parse_duration,
)


def live(*, handle: str | None = "h1", attempts: int = 3) -> Course:
    course = Course(attempts)
    course.connected()
    if handle is not None:
        course.on_event(UpstreamEvent(resumption_handle=handle), 0.0)
    return course


def test_it_starts_connecting_and_is_live_once_connected() -> None:
    course = Course(3)
    phases = [course.phase]
    course.connected()
    phases.append(course.phase)
    assert phases == [Phase.CONNECTING, Phase.LIVE]


@pytest.mark.parametrize(
    ("text", "seconds"), [("50s", 50.0), ("0.5s", 0.5), ("x", 0.0), ("-3s", 0.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_go_away_between_turns_with_a_handle_switches_at_once() -> None:
    course = live()
    assert course.on_event(UpstreamEvent(go_away="50s"), 10.0)
    assert course.phase is Phase.RESUMING
    assert course.switch_at == math.inf


def test_go_away_mid_turn_waits_for_the_turn_to_end() -> None:
    course = live()
    assert not course.on_event(UpstreamEvent(generating=True), 1.0)
    assert not course.on_event(UpstreamEvent(go_away="50s"), 10.0)
    assert course.phase is Phase.SWITCHING
    assert course.switch_at == 10.0 + 50.0 - 5.0  # at the latest 5 s before the deadline
    assert not course.on_event(UpstreamEvent(generating=True), 11.0)
    assert not course.on_event(UpstreamEvent(turn_complete=True), 12.0)  # its handle is old
    assert course.on_event(UpstreamEvent(resumption_handle="h2"), 12.1)  # a fresh one
    assert course.handle == "h2"


def test_a_short_go_away_leaves_half_its_time_as_the_margin() -> None:
    course = live()
    course.on_event(UpstreamEvent(generating=True), 0.0)
    course.on_event(UpstreamEvent(go_away="4s"), 100.0)
    assert course.switch_at == 102.0


def test_a_pending_tool_call_counts_as_mid_turn_and_interrupted_ends_the_turn() -> None:
    course = live()
    course.on_event(UpstreamEvent(tool_call={"toolCall": {}}), 0.0)
    assert not course.on_event(UpstreamEvent(go_away="50s"), 1.0)
    assert not course.on_event(UpstreamEvent(interrupted=True), 2.0)  # the turn ended; its
    assert course.on_event(UpstreamEvent(resumption_handle="h2"), 2.1)  # handle comes after


def test_go_away_without_a_handle_waits_for_one() -> None:
    course = live(handle=None)
    assert not course.on_event(UpstreamEvent(go_away="50s"), 0.0)
    assert course.on_event(UpstreamEvent(resumption_handle="h2"), 1.0)
    assert course.handle == "h2"


def test_the_deadline_mid_turn_switches_when_a_handle_is_held() -> None:
    course = live()
    course.on_event(UpstreamEvent(generating=True), 0.0)
    course.on_event(UpstreamEvent(go_away="50s"), 0.0)
    assert course.deadline_reached()
    assert course.phase is Phase.RESUMING


def test_the_deadline_without_a_handle_forgets_the_switch() -> None:
    course = live(handle=None)
    course.on_event(UpstreamEvent(go_away="50s"), 0.0)
    assert not course.deadline_reached()
    assert (course.phase, course.switch_at) == (Phase.LIVE, math.inf)
    assert not course.on_event(UpstreamEvent(resumption_handle="late"), 60.0)


def test_a_normal_close_is_upstream_closed() -> None:
    course = live()
    assert course.closed(1000, "") is UPSTREAM_CLOSED
    assert course.phase is Phase.ENDED


def test_a_drop_with_a_handle_is_resumed() -> None:
    course = live()
    assert course.closed(1006, "") is None
    assert course.phase is Phase.RESUMING


@pytest.mark.parametrize(
    ("handle", "code", "reason"),
    [
        (None, 1011, "Internal error encountered."),
        ("h1", 1007, "Request contains an invalid argument."),
        ("h1", 1008, "BidiGenerateContent session not found"),
        ("h1", 1011, "You exceeded your current quota"),
    ],
)
def test_drops_that_cannot_be_resumed_fail(handle: str | None, code: int, reason: str) -> None:
    course = live(handle=handle)
    with pytest.raises(UpstreamFailed, match=f"upstream closed the connection \\({code}: "):
        course.closed(code, reason)
    assert course.phase is Phase.ENDED


def test_resume_attempts_back_off_and_then_give_up() -> None:
    course = live(attempts=3)
    course.closed(1006, "")
    delays = []
    while (delay := course.next_attempt()) is not None:
        delays.append(delay)
        course.attempt_failed(UpstreamUnavailable("cannot reach upstream"))
    assert delays == list(RESUME_BACKOFF[:3])
    error = course.gave_up()
    assert error.message == (
        "the session could not be resumed after 3 attempts: cannot reach upstream"
    )


def test_back_off_is_capped_at_its_last_step_and_one_attempt_is_always_made() -> None:
    many = live(attempts=7)
    many.closed(1006, "")
    assert [many.next_attempt() for _ in range(7)] == [*RESUME_BACKOFF, 4.0, 4.0]
    none = live(attempts=0)
    none.closed(1006, "")
    assert (none.next_attempt(), none.next_attempt()) == (0.0, None)


def test_a_refused_handle_ends_the_resume_at_once() -> None:
    course = live()
    course.closed(1006, "")
    course.next_attempt()
    with pytest.raises(UpstreamFailed, match="could not be resumed: bad handle"):
        course.attempt_failed(UpstreamRejected("bad handle"))
    assert course.phase is Phase.ENDED


def test_a_successful_resume_gives_the_next_drop_all_its_attempts_again() -> None:
    course = live(attempts=2)
    course.closed(1006, "")
    course.next_attempt()
    course.attempt_failed(UpstreamUnavailable("x"))
    course.next_attempt()
    course.connected()
    course.closed(1006, "")
    assert [course.next_attempt(), course.next_attempt(), course.next_attempt()] == [0.0, 0.5, None]


# --- Make before break: the old connection's drain ----------------------------------------------


def switching(*, generating: bool) -> Course:
    """A course that decided a switch (its old connection mid-turn or not) and is opening the
    new connection beside the old."""
    course = live()
    if generating:
        course.on_event(UpstreamEvent(generating=True), 1.0)
        course.on_event(UpstreamEvent(go_away="10s"), 2.0)
        assert course.deadline_reached()  # at 7.0: the turn did not end in time
    else:
        assert course.on_event(UpstreamEvent(go_away="10s"), 2.0)
    assert course.phase is Phase.RESUMING
    return course


def test_a_switch_keeps_the_handle_it_took_while_the_new_connection_opens() -> None:
    course = switching(generating=False)
    course.on_event(UpstreamEvent(resumption_handle="h2"), 3.0)  # the old one goes on
    assert course.handle == "h1"
    course.connected()
    course.on_event(UpstreamEvent(resumption_handle="h3"), 4.0)  # the new one's
    assert course.handle == "h3"


def test_an_old_connection_mid_turn_owes_the_turn_until_its_deadline() -> None:
    course = switching(generating=True)
    course.connected()
    drain = course.begin_drain(8.0, transparent=False)
    assert drain is not None
    assert drain.until == 2.0 + 10.0 + DRAIN_GRACE  # its goAway's end, and a little more
    assert not course.activity.busy  # the course follows the new connection, which said nothing
    assert course.go_away_end == math.inf
    drain.on_event(UpstreamEvent(generating=True), 9.0)
    assert drain.until == 2.0 + 10.0 + DRAIN_GRACE
    drain.on_event(UpstreamEvent(turn_complete=True), 10.0)
    assert drain.until == 10.0 + DRAIN_QUIET  # then whatever follows close behind it


def test_between_turns_an_old_connection_owes_what_comes_before_it_goes_quiet() -> None:
    course = switching(generating=False)
    course.connected()
    drain = course.begin_drain(3.0, transparent=False)
    assert drain is not None
    assert drain.until == 3.0 + DRAIN_QUIET
    drain.on_event(UpstreamEvent(), 3.5)  # e.g. the answer to its last input, or a transcript
    assert drain.until == 3.5 + DRAIN_QUIET
    drain.on_event(UpstreamEvent(tool_call={"toolCall": {}}), 3.6)
    assert drain.until == 2.0 + 10.0 + DRAIN_GRACE  # a call is a turn under way


def test_transparently_the_new_connection_answers_what_the_old_one_owed() -> None:
    course = switching(generating=True)
    course.connected()
    assert course.begin_drain(8.0, transparent=True) is None  # the replay covers it: no twice


def test_an_interrupted_turn_is_owed_no_more() -> None:
    drain = Drain(Activity(generating=True), deadline=100.0, quiet_until=0.0)
    drain.on_event(UpstreamEvent(interrupted=True), 5.0)
    assert drain.until == 5.0 + DRAIN_QUIET


def test_with_no_new_connection_the_old_one_stays_and_a_later_drop_resumes() -> None:
    course = switching(generating=False)
    while course.next_attempt() is not None:
        course.attempt_failed(UpstreamUnavailable("down"))
    course.stay()
    assert (course.phase, course.switch_at) == (Phase.LIVE, math.inf)
    assert course.closed(1011, "Deadline expired before operation could complete.") is None
    assert course.phase is Phase.RESUMING
    assert course.next_attempt() == 0.0  # a fresh round of attempts


# --- Models that report interactionStatus (3.8 extended thinking) -------------------------------


def test_a_switch_waits_for_the_interaction_to_be_idle_and_a_handle_after_it() -> None:
    course = live()
    course.on_event(UpstreamEvent(interaction_status="IN_PROGRESS", generating=True), 1.0)
    assert not course.on_event(UpstreamEvent(go_away="50s"), 2.0)
    # turnComplete, but the model goes on reasoning: no switch, whatever handle comes.
    turn_end = UpstreamEvent(turn_complete=True, interaction_status="IN_PROGRESS")
    assert not course.on_event(turn_end, 3.0)
    assert not course.on_event(UpstreamEvent(resumption_handle="stale"), 3.1)
    assert not course.on_event(UpstreamEvent(generating=True), 10.0)  # a tool call's answer...
    idle = UpstreamEvent(turn_complete=True, interaction_status="IDLE")
    assert not course.on_event(idle, 20.0)  # idle, but the handle predates it
    assert course.on_event(UpstreamEvent(resumption_handle="h2"), 20.1)
    assert course.handle == "h2"


def test_an_interaction_past_the_deadline_switches_mid_way_and_is_drained() -> None:
    course = live()
    course.on_event(UpstreamEvent(interaction_status="IN_PROGRESS"), 1.0)
    course.on_event(UpstreamEvent(go_away="10s"), 2.0)
    assert course.switch_at == 7.0
    assert course.deadline_reached()  # with the handle it has: stale beats none
    course.connected()
    drain = course.begin_drain(7.5, transparent=False)
    assert drain is not None
    assert drain.until == 12.0 + DRAIN_GRACE  # the interaction is owed to the end
    drain.on_event(UpstreamEvent(turn_complete=True, interaction_status="IN_PROGRESS"), 8.0)
    assert drain.until == 12.0 + DRAIN_GRACE
    drain.on_event(UpstreamEvent(turn_complete=True, interaction_status="IDLE"), 9.0)
    assert drain.until == 9.0 + DRAIN_QUIET
