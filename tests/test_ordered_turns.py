"""OrderedTurns: slots taken strictly in ticket order, whoever asks first."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from vidstyle.ordered_turns import OrderedTurns

TIMEOUT = 5.0


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


class Holder:
    """A worker thread per ticket that takes its turn and keeps it until released."""

    def __init__(self, turns: OrderedTurns) -> None:
        self.turns = turns
        self.entered: list[int] = []
        self.inside: set[int] = set()
        self.most_inside = 0
        self._lock = threading.Lock()
        self._release: dict[int, threading.Event] = {}
        self._threads: list[threading.Thread] = []

    def start(self, ticket: int) -> None:
        self._release[ticket] = threading.Event()
        thread = threading.Thread(target=self._run, args=(ticket,), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self, ticket: int) -> None:
        with self.turns.turn(ticket):
            with self._lock:
                self.entered.append(ticket)
                self.inside.add(ticket)
                self.most_inside = max(self.most_inside, len(self.inside))
            self._release[ticket].wait(TIMEOUT)
            with self._lock:
                self.inside.discard(ticket)

    def release(self, ticket: int) -> None:
        self._release[ticket].set()

    def join(self) -> None:
        for event in self._release.values():
            event.set()
        for thread in self._threads:
            thread.join(TIMEOUT)
            assert not thread.is_alive()


def start_in_reverse(holder: Holder, tickets: list[int]) -> None:
    """Later tickets ask first, as a worker that read its inputs sooner would."""
    for ticket in reversed(tickets):
        holder.start(ticket)
        time.sleep(0.01)


def test_one_slot_goes_in_ticket_order_one_at_a_time() -> None:
    turns = OrderedTurns(1)
    tickets = [turns.ticket() for _ in range(4)]
    holder = Holder(turns)
    start_in_reverse(holder, tickets)
    for expected in range(4):
        wait_until(lambda: len(holder.entered) == expected + 1)  # noqa: B023  (called before the loop moves on)
        time.sleep(0.02)  # a later ticket that jumped the queue would show up now
        assert holder.entered == list(range(expected + 1))
        holder.release(expected)
    holder.join()
    assert holder.most_inside == 1


def test_two_slots_take_two_at_once_still_in_order() -> None:
    turns = OrderedTurns(2)
    tickets = [turns.ticket() for _ in range(4)]
    holder = Holder(turns)
    start_in_reverse(holder, tickets)
    wait_until(lambda: len(holder.entered) == 2)
    time.sleep(0.02)
    assert holder.entered == [0, 1]
    holder.release(1)  # a slot frees: the next ticket gets it, not whichever thread asked first
    wait_until(lambda: len(holder.entered) == 3)
    assert holder.entered == [0, 1, 2]
    holder.release(0)
    wait_until(lambda: len(holder.entered) == 4)
    holder.join()
    assert holder.entered == [0, 1, 2, 3]
    assert holder.most_inside == 2


def test_withdrawn_ticket_lets_later_ones_pass() -> None:
    turns = OrderedTurns(1)
    first, second, third = turns.ticket(), turns.ticket(), turns.ticket()
    holder = Holder(turns)
    start_in_reverse(holder, [second, third])
    time.sleep(0.05)
    assert holder.entered == []  # the first ticket neither took its slot nor gave up yet
    turns.withdraw(first)
    wait_until(lambda: holder.entered == [second])
    holder.release(second)
    wait_until(lambda: holder.entered == [second, third])
    holder.join()
    turns.withdraw(first)  # withdrawing again changes nothing
    assert turns.wait(turns.ticket(), stop=lambda: True)  # the one slot is free again


def test_withdraw_after_the_turn_frees_the_slot_once() -> None:
    turns = OrderedTurns(1)
    first, second = turns.ticket(), turns.ticket()
    assert turns.wait(first)
    assert not turns.wait(second, stop=lambda: True)  # the slot is held
    turns.withdraw(first)  # e.g. a request body written, from another thread
    turns.withdraw(first)  # and again in a `finally`: must not free a second slot
    assert turns.wait(second, stop=lambda: True)
    third = turns.ticket()
    assert not turns.wait(third, stop=lambda: True)


def test_an_exception_in_the_turn_releases_the_slot() -> None:
    turns = OrderedTurns(1)
    first, second = turns.ticket(), turns.ticket()
    with pytest.raises(RuntimeError, match="backend failed"):
        with turns.turn(first):
            raise RuntimeError("backend failed")
    assert turns.wait(second, stop=lambda: True)


def test_stop_gives_up_waiting_but_keeps_the_place_in_line() -> None:
    turns = OrderedTurns(1)
    first, second, third = turns.ticket(), turns.ticket(), turns.ticket()
    assert turns.wait(first)
    stopped = threading.Event()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(turns.wait(second, stopped.is_set, poll=0.01)))
    waiter.start()
    time.sleep(0.03)
    stopped.set()
    waiter.join(TIMEOUT)
    assert result == [False]
    turns.withdraw(first)
    assert not turns.wait(third, stop=lambda: True)  # the second ticket is still ahead of it
    turns.withdraw(second)
    assert turns.wait(third, stop=lambda: True)


def test_a_shared_condition_wakes_a_waiter_when_its_owner_notifies() -> None:
    lock = threading.Condition(threading.RLock())
    turns = OrderedTurns(condition=lock)
    first, second = turns.ticket(), turns.ticket()
    assert turns.wait(first)
    cancelled = threading.Event()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(turns.wait(second, cancelled.is_set)))  # no poll
    waiter.start()
    time.sleep(0.03)
    with lock:  # the owner holds its lock while calling in (reentrant) and notifies on cancel
        cancelled.set()
        lock.notify_all()
    waiter.join(TIMEOUT)
    assert result == [False]


def test_waiting_on_a_ticket_not_in_line_is_refused() -> None:
    turns = OrderedTurns(1)
    ticket = turns.ticket()
    turns.withdraw(ticket)
    with pytest.raises(ValueError, match="not waiting"):
        turns.wait(ticket)
    with pytest.raises(ValueError, match="at least one slot"):
        OrderedTurns(0)
