"""The asynchronous driver contract (submit/collect) through sessions: completion order,
one request's failure inside a batch, driver failure and migration with requests in flight
(nothing lost, nothing duplicated), on OpenSSL (synchronous: the contract's defaults) and on
a queueing driver defined here that completes requests out of order, like a device."""

from __future__ import annotations

from collections import deque

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.driver import AeadContext, Driver, DriverKind, Offer
from ocfpy.crypto.errors import (
    AuthenticationError,
    DriverFailure,
    InvalidInput,
    Reason,
    Unsupported,
)
from ocfpy.crypto.registry import Registry

KEY = bytes(range(32)) + b"salt"


class QueueAead(AeadContext):
    """AES-GCM whose submitted requests wait in a queue until collect(), which completes them
    newest first (a device may finish in any order). ``fail_after``: collect() raises
    DriverFailure once this many requests completed, losing the rest in flight."""

    asynchronous = True
    max_depth = 32

    def __init__(self, transform, key, driver):
        self.transform = transform
        self._aead = AESGCM(key[:-4])
        self._salt = key[-4:]
        self._queue: deque = deque()
        self._driver = driver

    def seal(self, iv, plaintext, aad):
        return self._aead.encrypt(self._salt + iv, plaintext, aad)

    def open(self, iv, ciphertext, aad):
        try:
            return self._aead.decrypt(self._salt + iv, ciphertext, aad)
        except InvalidTag:
            raise AuthenticationError("tag mismatch") from None

    def submit(self, requests):
        self._queue.extend(requests)
        self._driver.submitted += len(requests)

    def collect(self, wait=True):
        out = []
        while self._queue:
            d = self._driver
            if d.fail_after is not None and d.completed >= d.fail_after:
                self._queue.clear()  # the device lost what it held
                raise DriverFailure(f"injected failure after {d.completed} completions")
            ticket, method, args = self._queue.pop()  # newest first
            try:
                out.append((ticket, getattr(self, method)(*args), None))
            except AuthenticationError as exc:
                out.append((ticket, None, exc))
            d.completed += 1
            if not wait and len(out) == 2:
                break
        return out


class QueueDriver(Driver):
    name = "test_queue"
    kind = DriverKind.HARDWARE
    description = "AES-256-GCM through a queue completed out of order"

    def __init__(self):
        self.fail_after: int | None = None
        self.completed = self.submitted = 0

    def offers(self):
        return [Offer("aes256gcm16", "test")]

    def new_context(self, transform, key):
        if transform.keyword != "aes256gcm16":
            raise Unsupported(transform.keyword, Reason.NOT_OFFERED)
        return QueueAead(transform, key, self)


@pytest.fixture
def queue_driver():
    registry = Registry.load()
    driver = QueueDriver()
    registry.add(driver)
    return registry, driver


def _items(n, size=100):
    return [(i.to_bytes(8, "big"), bytes([i % 256]) * size, b"aad" + bytes([i % 256]))
            for i in range(n)]


def _reference(items):
    aead = AESGCM(KEY[:-4])
    return [aead.encrypt(KEY[-4:] + iv, pt, aad) for iv, pt, aad in items]


def test_synchronous_driver_takes_the_contract_through_its_defaults():
    s = Dispatcher(Registry.load(), backend="openssl").open("aes256gcm16", KEY)
    items = _items(10)
    assert not s.asynchronous
    tickets = s.submit("seal", items, tags=[f"p{i}" for i in range(10)])
    assert list(tickets) == list(range(10)) and s.in_flight == 10
    done = s.collect()
    assert [c.ticket for c in done] == list(tickets)
    assert [c.tag for c in done] == [f"p{i}" for i in range(10)]
    assert [c.result for c in done] == _reference(items)
    assert all(c.error is None for c in done)
    assert s.in_flight == 0 and s.ops == 10 and s.batches == 1 and s.bytes == 1000
    assert s.collect() == [] and s.drain() == []


def test_completions_come_out_in_ticket_order(queue_driver):
    registry, driver = queue_driver
    s = Dispatcher(registry).open("aes256gcm16", KEY)
    assert s.driver == "test_queue" and s.asynchronous
    items = _items(6)
    s.submit("seal", items[:3])
    s.submit("seal", items[3:])
    assert driver.submitted == 6
    # without waiting, the driver completes the two newest (5, 4): nothing can go out yet
    assert s.collect(wait=False) == [] and s.in_flight == 6
    done = s.drain()
    assert [c.ticket for c in done] == list(range(6))
    assert [c.result for c in done] == _reference(items)
    assert s.ops == 6 and s.in_flight == 0 and driver.completed == 6


def test_one_failed_request_in_a_batch_is_reported_for_that_request_only(queue_driver):
    registry, _ = queue_driver
    s = Dispatcher(registry).open("aes256gcm16", KEY)
    items = _items(5)
    sealed = _reference(items)
    forged = bytearray(sealed[2])
    forged[-1] ^= 1
    sealed[2] = bytes(forged)
    s.submit("open", [(iv, ct, aad) for (iv, _, aad), ct in zip(items, sealed, strict=True)])
    done = s.drain()
    assert [c.ticket for c in done] == list(range(5))
    assert isinstance(done[2].error, AuthenticationError) and done[2].result is None
    assert [c.result for i, c in enumerate(done) if i != 2] == [
        pt for i, (_, pt, _) in enumerate(items) if i != 2]
    assert s.auth_failures == 1 and s.migrations == 0 and s.driver == "test_queue"


def test_driver_failure_with_requests_in_flight_loses_and_duplicates_nothing(queue_driver):
    registry, driver = queue_driver
    s = Dispatcher(registry).open("aes256gcm16", KEY)
    items = _items(20)
    driver.fail_after = 7  # 7 of the 20 complete (newest first), then the device dies
    tickets = s.submit("seal", items, tags=list(range(100, 120)))
    done = s.drain()
    assert [c.ticket for c in done] == list(tickets)
    assert [c.tag for c in done] == list(range(100, 120))
    assert [c.result for c in done] == _reference(items)
    assert s.driver == "openssl" and s.migrations == 1 and s.errors == 1
    assert s.ops == 20 and s.in_flight == 0
    # the 7 completed on test_queue were kept, the 13 it lost ran once more on openssl
    assert driver.completed == 7 and set(registry.get("openssl").sessions) == {s}


def test_removed_driver_with_requests_in_flight(queue_driver):
    registry, driver = queue_driver
    s = Dispatcher(registry).open("aes256gcm16", KEY)
    items = _items(8)
    s.submit("seal", items)
    registry.remove("test_queue", "device unplugged")
    assert s.driver == "openssl"
    more = _items(12)[8:]
    s.submit("seal", more)
    done = s.drain()
    assert [c.ticket for c in done] == list(range(12))
    assert [c.result for c in done] == _reference(items + more)
    assert driver.completed == 0 and s.migrations == 1


def test_only_per_packet_methods_can_be_submitted():
    d = Dispatcher(Registry.load())
    s = d.open("aes256gcm16", KEY)
    with pytest.raises(InvalidInput, match="'close' cannot be submitted"):
        s.submit("close", [()])
    with pytest.raises(InvalidInput, match="2 requests but 1 tags"):
        s.submit("seal", _items(2), tags=["only one"])
    prf = d.open("prfsha256", b"key")
    with pytest.raises(InvalidInput, match="asynchronous methods: none"):
        prf.submit("prf", [(b"x",)])
    assert s.in_flight == 0


def test_batches_on_an_asynchronous_driver_go_through_its_queue(queue_driver):
    # what the ESP dataplane gets without a change of its own: seal_batch/open_batch put every
    # packet of the batch in flight at once, with the synchronous batch's results and counts
    registry, driver = queue_driver
    s = Dispatcher(registry).open("aes256gcm16", KEY)
    items = _items(16)
    sealed = s.seal_batch(items)
    assert sealed == _reference(items) and driver.submitted == 16
    sealed[3] = sealed[3][:-1] + bytes([sealed[3][-1] ^ 1])
    opened = s.open_batch([(iv, ct, aad) for (iv, _, aad), ct in zip(items, sealed, strict=True)])
    assert opened[3] is None and [o for i, o in enumerate(opened) if i != 3] == [
        pt for i, (_, pt, _) in enumerate(items) if i != 3]
    assert driver.submitted == 32 and s.auth_failures == 1 and s.ops == 32 and s.in_flight == 0
    driver.fail_after = driver.completed + 5  # and a failure mid-batch migrates as before
    assert s.seal_batch(items) == _reference(items)
    assert s.driver == "openssl" and s.migrations == 1
