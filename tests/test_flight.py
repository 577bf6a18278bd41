"""``dsfs.flight.SingleFlight``: one computation per key, shared by its callers.

The tests order their tasks with sleeps, so they run on trio's virtual clock
(``run`` below): time moves only when every task waits, straight to the next
deadline, so a task that sleeps 0.01 s always wakes before one that sleeps
0.05 s.  On the real clock a busy machine that stalls this process for 50 ms
wakes both in one batch, in either order (trio shuffles a batch), and a test
could see a flight already over where it expects it in the air.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

trio = pytest.importorskip("trio", reason="trio is not installed")

from trio.testing import MockClock  # noqa: E402

from dsfs.flight import SingleFlight  # noqa: E402

T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]]) -> T:
    """``trio.run`` on a virtual clock that jumps to the next deadline at once."""
    return trio.run(main, clock=MockClock(autojump_threshold=0))


class Boom(Exception):
    pass


def test_overlapping_callers_share_one_run() -> None:
    flights: SingleFlight[str] = SingleFlight()
    calls = []
    results = []

    async def compute() -> str:
        calls.append(1)
        await trio.sleep(0.05)
        return "value"

    async def caller() -> None:
        results.append(await flights.run("k", compute))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(caller)
        assert "k" not in flights and len(flights) == 0
        results.append(await flights.run("k", compute))  # a later caller runs it again

    run(main)
    assert calls == [1, 1]
    assert results == ["value"] * 6


def test_different_keys_run_concurrently() -> None:
    flights: SingleFlight[int] = SingleFlight()
    started: list[int] = []

    async def compute(key: int) -> int:
        started.append(key)
        await trio.sleep(0.05)
        return key * 10

    async def main() -> list[int]:
        out: list[int] = []

        async def caller(key: int) -> None:
            out.append(await flights.run(key, lambda: compute(key)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, 1)
            nursery.start_soon(caller, 2)
            await trio.sleep(0.01)
            assert sorted(flights) == [1, 2]  # both in flight at once
        return sorted(out)

    assert run(main) == [10, 20]
    assert sorted(started) == [1, 2]


def test_an_exception_is_shared_by_the_waiters() -> None:
    flights: SingleFlight[str] = SingleFlight()
    calls = []
    errors: list[BaseException] = []

    async def failing() -> str:
        calls.append(1)
        await trio.sleep(0.05)
        raise Boom("store down")

    async def caller() -> None:
        try:
            await flights.run("k", failing)
        except Boom as exc:
            errors.append(exc)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(caller)
        assert "k" not in flights

    run(main)
    assert calls == [1]
    assert len(errors) == 4 and all(str(e) == "store down" for e in errors)


def test_join_raises_the_leaders_failure_and_lead_covers_several_keys() -> None:
    flights: SingleFlight[str] = SingleFlight()
    seen: list[str] = []

    async def failing() -> None:
        await trio.sleep(0.05)
        raise Boom("window failed")

    async def leader() -> None:
        with pytest.raises(Boom):
            await flights.lead(failing, "a", "b", "a")

    async def waiter(key: str) -> None:
        try:
            await flights.join(key)
        except Boom:
            seen.append(key)

    async def main() -> None:
        assert await flights.join("a") is False  # nothing in flight: at once
        async with trio.open_nursery() as nursery:
            nursery.start_soon(leader)
            await trio.sleep(0.01)
            assert "a" in flights and "b" in flights
            with pytest.raises(RuntimeError):
                await flights.lead(failing, "b")
            nursery.start_soon(waiter, "a")
            nursery.start_soon(waiter, "b")
        assert len(flights) == 0

    run(main)
    assert sorted(seen) == ["a", "b"]


def test_a_cancelled_leader_does_not_cancel_its_waiters() -> None:
    """The leader's cancellation is its own: a waiter wakes, leads the next
    attempt and gets a result; nobody else gets ``Cancelled``."""
    flights: SingleFlight[str] = SingleFlight()
    calls: list[str] = []
    results: list[str] = []

    async def slow(who: str) -> str:
        calls.append(who)
        await trio.sleep(0.2)
        return who

    async def main() -> None:
        leader_scope = trio.CancelScope()

        async def leader() -> None:
            with leader_scope:
                results.append(await flights.run("k", lambda: slow("leader")))

        async def waiter() -> None:
            results.append(await flights.run("k", lambda: slow("waiter")))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(leader)
            await trio.sleep(0.01)
            nursery.start_soon(waiter)
            await trio.sleep(0.05)
            leader_scope.cancel()
        assert len(flights) == 0

    run(main)
    assert calls == ["leader", "waiter"]
    assert results == ["waiter"]


def test_join_after_a_cancelled_leader_says_try_again() -> None:
    flights: SingleFlight[str] = SingleFlight()
    answers: list[bool] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def leader() -> None:
                with scope:
                    await flights.lead(trio.sleep_forever, "k")

            async def waiter() -> None:
                answers.append(await flights.join("k"))

            nursery.start_soon(leader)
            await trio.sleep(0.01)
            nursery.start_soon(waiter)
            await trio.sleep(0.01)
            scope.cancel()

    run(main)
    assert answers == [True]
    assert "k" not in flights
