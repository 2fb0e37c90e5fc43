"""Careful clients: create orders and retry with the same key; page through the read model.

Every request and answer goes into the `History`, which the invariant checker
reads afterwards.
"""

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx


@dataclass
class Attempt:
    at: float
    replica: str
    status: int | None  # None: the answer was lost (timeout, connection error)
    body: dict[str, Any] | None = None


@dataclass
class KeyHistory:
    key: str
    currency: str
    amount: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def acknowledged(self) -> list[dict[str, Any]]:
        return [a.body for a in self.attempts if a.status in (200, 201) and a.body is not None]

    @property
    def lost_answers(self) -> int:
        return sum(1 for a in self.attempts if a.status is None)


@dataclass
class History:
    keys: dict[str, KeyHistory] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    fetch_statuses: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    created_at: list[float] = field(default_factory=list)  # when each 201 was answered
    fetch_failures_at: list[tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, history: KeyHistory, attempt: Attempt) -> None:
        with self.lock:
            history.attempts.append(attempt)
            self.statuses[str(attempt.status) if attempt.status else "lost"] += 1
            if attempt.status == 201:
                self.created_at.append(attempt.at)
            if attempt.status is not None and attempt.status >= 500 and attempt.status != 503:
                self.violations.append(f"PUT answered {attempt.status}: {attempt.body}")
            if attempt.status in (400, 422):
                self.violations.append(f"a well-formed order was refused with {attempt.status}: {attempt.body}")


RETRYABLE = {409, 503}  # 409 only while the same key is in flight (btc_cap_exceeded is final)


def create_orders(
    replicas: list[str], history: History, stop: threading.Event, seed: int, max_attempts: int = 40
) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=2.0) as client:
        while not stop.is_set():
            body = {
                "currency": rng.choice(["EUR", "GBP", "USD"]),
                "amount": str(Decimal(rng.randint(1_000, 50_000)).scaleb(-2)),
                "idempotence_key": str(uuid.uuid4()),
            }
            key = KeyHistory(body["idempotence_key"], body["currency"], body["amount"])
            with history.lock:
                history.keys[key.key] = key
            for attempt in range(max_attempts):
                replica = replicas[rng.randrange(len(replicas))]
                try:
                    response = client.put(f"{replica}/buy_order", json=body)
                except httpx.HTTPError:
                    history.record(key, Attempt(time.monotonic(), replica, None))
                    time.sleep(min(0.05 * 2**attempt, 1.0))
                    continue
                payload = response.json() if response.headers.get("content-type") == "application/json" else None
                history.record(key, Attempt(time.monotonic(), replica, response.status_code, payload))
                if response.status_code in (200, 201):
                    break
                code = (payload or {}).get("detail", {}).get("code") if isinstance(payload, dict) else None
                if response.status_code not in RETRYABLE or code == "btc_cap_exceeded":
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
                if stop.is_set():
                    break


def page_continuously(fetch: str, history: History, stop: threading.Event) -> None:
    """Page from the newest order down, over and over; every answer must be 200 or a clean 503."""
    with httpx.Client(timeout=2.0) as client:
        while not stop.is_set():
            seen: set[str] = set()
            reference = None
            for _ in range(20):
                params: dict[str, Any] = {"page_size": 50}
                if reference:
                    params["last_reference"] = reference
                try:
                    response = client.get(f"{fetch}/buy_orders", params=params)
                except httpx.HTTPError:
                    with history.lock:
                        history.fetch_statuses["lost"] += 1
                    break
                with history.lock:
                    history.fetch_statuses[str(response.status_code)] += 1
                    if response.status_code != 200:
                        history.fetch_failures_at.append((time.monotonic(), response.status_code))
                    if response.status_code >= 500 and response.status_code != 503:
                        history.violations.append(f"GET /buy_orders answered {response.status_code}")
                if response.status_code != 200:
                    break
                page = response.json()
                ids = [order["id"] for order in page["buy_orders"]]
                if seen & set(ids) or len(set(ids)) != len(ids):
                    with history.lock:
                        history.violations.append("an order appeared twice while paging")
                seen.update(ids)
                if not page["has_more"]:
                    break
                reference = page["last_reference"]
            stop.wait(0.2)
