"""What the workers share: a stop flag set by SIGTERM/SIGINT, and backoff with jitter."""

import logging
import random
import signal
import threading
import time
from types import FrameType
from typing import Any

from btc_orders import logs


class StopFlag:
    """Set by SIGTERM or SIGINT; workers finish the batch at hand and exit."""

    def __init__(self, signals: bool = True) -> None:
        self._event = threading.Event()
        if signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self._set)

    def _set(self, _signum: int, _frame: FrameType | None) -> None:
        self.set()

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)


class Backoff:
    """Exponential backoff with full jitter between retries, reset on success.

    The n-th delay in a row is drawn uniformly from [0, min(ceiling, first * 2**n)]
    ("full jitter"): replicas that lost the same database or broker at the same moment
    spread their reconnects over the window instead of arriving in lockstep. The
    ceiling is low on purpose: a reconnect attempt costs little, and a short ceiling
    brings the event flow back within seconds of the end of an outage.
    """

    def __init__(self, first: float = 0.2, ceiling: float = 2.0, rng: random.Random | None = None) -> None:
        if not 0 < first <= ceiling:
            raise ValueError("backoff needs 0 < first <= ceiling")
        self.first = first
        self.ceiling = ceiling
        self.attempts = 0
        self._rng = rng or random.Random()

    def window(self) -> float:
        """The upper bound of the next delay."""
        return min(self.ceiling, self.first * 2.0 ** min(self.attempts, 32))

    def delay(self) -> float:
        upper = self.window()
        self.attempts += 1
        return self._rng.uniform(0, upper)

    def reset(self) -> None:
        self.attempts = 0


class OutageLog:
    """One log event when an outage begins and one when it ends, never one per retry.

    A worker retrying every second through an hour-long outage would otherwise write
    thousands of identical lines and bury the two that matter.
    """

    def __init__(self, logger: logging.Logger, began: str, ended: str) -> None:
        self.logger = logger
        self.began_event = began
        self.ended_event = ended
        self.attempts = 0
        self._since: float | None = None

    @property
    def active(self) -> bool:
        return self._since is not None

    def failed(self, reason: str, **fields: Any) -> None:
        self.attempts += 1
        if self._since is None:
            self._since = time.monotonic()
            logs.event(self.logger, self.began_event, logging.WARNING, reason=reason, **fields)

    def recovered(self, **fields: Any) -> None:
        if self._since is None:
            return
        lasted = round(time.monotonic() - self._since, 3)
        logs.event(self.logger, self.ended_event, outage_seconds=lasted, failed_attempts=self.attempts, **fields)
        self._since, self.attempts = None, 0
