"""What the two workers share: a stop flag set by SIGTERM/SIGINT, and backoff."""

import signal
import threading
from types import FrameType


class StopFlag:
    """Set by SIGTERM or SIGINT; workers finish the batch at hand and exit."""

    def __init__(self) -> None:
        self._event = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._set)

    def _set(self, _signum: int, _frame: FrameType | None) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)


class Backoff:
    """Exponential backoff between retries: 0.2 s doubling up to 2 s, reset on success.

    The ceiling is low on purpose: a reconnect attempt costs little, and a short ceiling
    brings the event flow back within seconds of the end of an outage.
    """

    def __init__(self, first: float = 0.2, ceiling: float = 2.0) -> None:
        self.first = first
        self.ceiling = ceiling
        self.next = first

    def delay(self) -> float:
        current = self.next
        self.next = min(self.next * 2, self.ceiling)
        return current

    def reset(self) -> None:
        self.next = self.first
