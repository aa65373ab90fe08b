"""Webhook delivery of alerts (issue 33): every alert of a watch with a `url` goes into the queue
file (`<alerts_dir>/outbox.jsonl`) first, then `flush` POSTs the queue in order, each alert retried
with exponential backoff by tenacity (`conf/watchlists.yaml` `delivery`). A receiver that stays down
loses nothing: its alerts stay queued, in order, and go out on the next run or `carsearch watch flush`.
Appenders and the flusher share one lock file, so a flush never drops an alert queued meanwhile."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from carsearch.core.io import append_locked, write_bytes
from carsearch.index.watches import Delivery

log = logging.getLogger("carsearch.alerts")
OUTBOX, LOCK = "outbox.jsonl", ".outbox.lock"


class DeliveryError(OSError):
    """A receiver that answered with an error status (or not at all)."""


@contextlib.contextmanager
def _locked(alerts_dir: Path):
    alerts_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(alerts_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def enqueue(alerts_dir: Path, entries: list[dict]) -> None:
    """Queue {url, watch, alert} entries (one locked append)."""
    if entries:
        with _locked(alerts_dir):
            append_locked(alerts_dir / OUTBOX, b"".join(_line(e) for e in entries))


def _line(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, sort_keys=True, default=float) + "\n").encode()


def queued(alerts_dir: Path) -> list[dict]:
    """The queued entries, oldest first (a torn line, from a writer killed mid-write, is skipped)."""
    p = alerts_dir / OUTBOX
    out = []
    for line in p.read_bytes().split(b"\n") if p.is_file() else []:
        with contextlib.suppress(ValueError):
            out.append(json.loads(line)) if line.strip() else None
    return out


def post(url: str, alert: dict, timeout: float) -> None:
    """POST one alert as JSON; DeliveryError unless the receiver answers 2xx."""
    req = urllib.request.Request(url, data=_line(alert), headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            if not 200 <= r.status < 300:
                raise DeliveryError(f"{url} answered {r.status}")
    except urllib.error.HTTPError as e:
        raise DeliveryError(f"{url} answered {e.code}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise DeliveryError(f"{url}: {getattr(e, 'reason', e)}") from None


def deliver(entry: dict, d: Delivery) -> bool:
    """POST one queued entry with retries (exponential backoff); False when every try failed."""
    url = entry["url"]

    def before_sleep(state):
        log.warning(
            "webhook %s: alert %s try %d failed (%s); retrying in %.2f s",
            url,
            entry["alert"].get("alert_id"),
            state.attempt_number,
            state.outcome.exception(),
            state.next_action.sleep,
        )

    retrying = Retrying(
        stop=stop_after_attempt(d.attempts),
        wait=wait_exponential(multiplier=d.wait_s, max=d.max_wait_s),
        retry=retry_if_exception_type(DeliveryError),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        retrying(post, url, entry["alert"], d.timeout_s)
    except DeliveryError as e:
        log.warning("webhook %s: gave up after %d tries (%s); the alert stays queued", url, d.attempts, e)
        return False
    log.info("webhook %s: delivered alert %s", url, entry["alert"].get("alert_id"))
    return True


def flush(alerts_dir: Path, d: Delivery) -> dict:
    """Send the queue in order. After a receiver gives up, its later alerts are not tried this time
    (they stay queued behind it, in order); other receivers go on. Returns delivered / queued counts."""
    with _locked(alerts_dir):
        entries = queued(alerts_dir)
        down, left, sent = set(), [], 0
        for e in entries:
            if e["url"] in down or not deliver(e, d):
                down.add(e["url"])
                left.append(e)
            else:
                sent += 1
        if entries:
            write_bytes(alerts_dir / OUTBOX, b"".join(_line(e) for e in left))
    return {"delivered": sent, "queued": len(left), "receivers_down": sorted(down)}
