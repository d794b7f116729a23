"""A conversation carried to a new socket: what a session leaves, and how the next one resumes.

The same fakes as the driver tests (memory channels, autojump clock).
"""

from __future__ import annotations

import orjson
import trio
import trio.testing

from liveproxy.contract.endings import BROWSER_CLOSED, SHUTDOWN
from liveproxy.contract.errors import InvalidSetup
from liveproxy.core.resumable import Resumable, resumable_ending
from liveproxy.core.stats import Totals
from tests.core.test_session_driver import HANDLE, SETUP, running

TEXT_SETUP = orjson.loads(SETUP)["setup"]


async def test_a_session_leaves_its_handle_setup_stats_and_unanswered_turns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(time_limit=100, resume_token="rt-1", resume_window_seconds=45) as run:
        first = await run.gemini.wait_for(1)
        await first.to_proxy_send.send('{"serverContent":{"turnComplete":true}}')
        await first.to_proxy_send.send(HANDLE % "h1")
        await run.to_session.send('{"type": "text", "text": "after h1"}')
        await run.to_session.send(b"\x01\x00" * 160)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(30)
        run.to_session.close()
    assert run.outcome == BROWSER_CLOSED
    resumable = run.session.resumable(run.outcome, "conv-1")
    assert resumable is not None
    assert resumable.handle == "h1"
    assert resumable.conversation_id == "conv-1"
    assert run.session.relay is not None
    assert resumable.setup == run.session.relay.setup
    assert 69 < resumable.remaining_seconds <= 70
    assert resumable.time_limit in (69, 70)
    assert (resumable.totals.message_count, resumable.totals.audio_chunks_sent) == (2, 1)
    assert [orjson.loads(m) for m in resumable.replay] == [
        {
            "clientContent": {
                "turns": [{"role": "user", "parts": [{"text": "after h1"}]}],
                "turnComplete": True,
            }
        }
    ]
    assert Resumable.from_json(resumable.to_json() or "") == resumable
    announced = [e["sessionResumable"] for e in run.browser.events() if "sessionResumable" in e]
    assert announced == [{"token": "rt-1", "expiresIn": 45}]


async def test_before_any_handle_the_conversation_is_its_setup_and_every_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(resume_token="rt") as run:  # no handle ever came
        await run.gemini.wait_for(1)
        await run.to_session.send('{"type": "text", "text": "first words"}')
        await trio.testing.wait_all_tasks_blocked()
        run.to_session.close()
    resumable = run.session.resumable(run.outcome, "c")
    assert resumable is not None
    assert resumable.handle is None
    assert ["first words" in m for m in resumable.replay] == [True]
    assert [e for e in run.browser.events() if "sessionResumable" in e]


async def test_nothing_is_resumable_without_a_token_or_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(time_limit=10, resume_token="rt") as run:
        await run.gemini.wait_for(1)
    assert run.session.resumable(run.outcome, "c") is None  # time_limit: fatal, and no time
    async with running() as run:  # resumption off: no token
        first = await run.gemini.wait_for(1)
        await first.to_proxy_send.send(HANDLE % "h1")
        await trio.testing.wait_all_tasks_blocked()
        run.to_session.close()
    assert run.session.resumable(run.outcome, "c") is None
    assert not [e for e in run.browser.events() if "sessionResumable" in e]


def test_only_the_browser_leaving_and_shutdown_leave_a_conversation_resumable() -> None:
    assert resumable_ending(BROWSER_CLOSED)
    assert resumable_ending(SHUTDOWN)
    assert resumable_ending(None)  # cancelled: the browser is gone
    assert not resumable_ending(InvalidSetup("bad"))
    from liveproxy.contract.endings import TIME_LIMIT, UPSTREAM_CLOSED

    assert not resumable_ending(TIME_LIMIT)
    assert not resumable_ending(UPSTREAM_CLOSED)


def test_a_state_too_large_is_not_kept_and_garbage_is_refused() -> None:
    import pytest

    state = Resumable(
        conversation_id="c",
        handle="h",
        setup={},
        remaining_seconds=10,
        elapsed_seconds=1,
        replay=("x" * 600_000,),
    )
    assert state.to_json() is None
    for garbage in ("", "[]", '{"handle": 3}', '{"conversation_id": "c"}'):
        with pytest.raises(ValueError, match="not a resumable"):
            Resumable.from_json(garbage)


async def test_a_resumed_socket_continues_the_conversation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    replayed = '{"clientContent":{"turns":[{"role":"user","parts":[{"text":"lost"}]}]}}'
    resumed = Resumable(
        conversation_id="conv-1",
        handle="h7",
        setup=TEXT_SETUP | {"model": "gemini-3.8-live"},
        remaining_seconds=50,
        elapsed_seconds=130,
        totals=Totals(message_count=12, audio_chunks_sent=40, reconnects=1),
        replay=(replayed,),
    )
    start = trio.current_time()
    async with running(time_limit=50, resumed=resumed, resume_token="rt-2") as run:
        first = await run.gemini.wait_for(1)
        # The app sends its usual setup first: dropped, the stored one is used.
        await run.to_session.send('{"type": "text", "text": "new turn"}')
        await trio.testing.wait_all_tasks_blocked()
        await first.to_proxy_send.send('{"serverContent":{"turnComplete":true}}')
        await trio.testing.wait_all_tasks_blocked()
        assert run.session.counters.elapsed() == 130
    assert run.outcome is not None
    assert trio.current_time() - start == 50  # the time left, not a new limit
    assert orjson.loads(first.setup)["setup"]["sessionResumption"] == {"handle": "h7"}
    assert first.received[0] == replayed  # the replay goes first, before anything new
    assert "new turn" in str(first.received[1])
    assert len(first.received) == 2  # the browser's setup frame was not forwarded
    events = run.browser.events()
    assert events[0] == {"setupComplete": {}}, (events, len(run.gemini.sockets))
    assert events[1] == {"sessionResumable": {"token": "rt-2", "expiresIn": 60}}
    assert run.session.counters.message_count == 13
    assert run.session.counters.reconnects == 1
