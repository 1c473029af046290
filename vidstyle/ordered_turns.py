"""Turns taken in the order tickets were handed out: one home for "first come, first served".

A plain lock or semaphore lets whichever thread asks first go first, so a frame that finished
reading its inputs early could overtake one queued before it. Here each caller takes a ticket
when it is queued, and may take a slot only once every earlier ticket has taken one or given
up, and a slot is free:

* the render loop: the backend's `concurrency` slots, frames in queue order;
* the WebUI HTTP backend: per server, one request body on the wire at a time, in the order
  the calls took that server's slots (its first-come-first-served queue keeps frame order);
* the in-process WebUI backend: frames ask for the WebUI's queue lock one at a time, in order.

A leaf module (threading only), so backends may import it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class OrderedTurns:
    """`slots` turns at a time, handed out strictly in ticket order.

    `condition` lets an owner share its own lock, so a state change it signals (a cancel)
    wakes the waiters at once; it must be reentrant if the owner calls in while holding it.
    """

    def __init__(self, slots: int = 1, condition: threading.Condition | None = None) -> None:
        if slots < 1:
            raise ValueError(f"OrderedTurns needs at least one slot, not {slots}.")
        self._cond = condition or threading.Condition()
        self._free = slots
        self._next_ticket = 0
        self._waiting: set[int] = set()  # tickets handed out, not yet holding a slot nor withdrawn
        self._holding: set[int] = set()  # tickets holding a slot

    def ticket(self) -> int:
        """The caller's place in line; every ticket ends with `withdraw` (or a `turn` block)."""
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._waiting.add(ticket)
            return ticket

    def wait(self, ticket: int, stop: Callable[[], bool] | None = None, poll: float | None = None) -> bool:
        """Block until `ticket` holds a slot (True), or until `stop()` says to give up (False).

        `stop` is looked at whenever the condition is notified and at least every `poll` seconds.
        Giving up keeps the ticket in line: the caller still withdraws it.
        """
        with self._cond:
            if ticket not in self._waiting:
                raise ValueError(f"Ticket {ticket} is not waiting for a turn (taken already, or withdrawn).")
            while not (self._free > 0 and min(self._waiting) == ticket):
                if stop is not None and stop():
                    return False
                self._cond.wait(timeout=poll)
            self._waiting.discard(ticket)
            self._holding.add(ticket)
            self._free -= 1
            self._cond.notify_all()  # the next ticket may now take a free slot
            return True

    def withdraw(self, ticket: int) -> None:
        """`ticket` is done: a waiting one gives up its place (later ones may pass), a holding
        one frees its slot. Safe to call more than once, and from any thread."""
        with self._cond:
            if ticket in self._waiting:
                self._waiting.discard(ticket)
            elif ticket in self._holding:
                self._holding.discard(ticket)
                self._free += 1
            else:
                return
            self._cond.notify_all()

    @contextmanager
    def turn(self, ticket: int) -> Iterator[None]:
        """Hold a slot for the block; it is freed however the block ends."""
        self.wait(ticket)
        try:
            yield
        finally:
            self.withdraw(ticket)
