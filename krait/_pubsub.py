"""WebSocket channels across machines, through Redis pub/sub (``config.pubsub``).

Every krait of a site publishes its channels' messages to Redis, and relays what the others
publish to its own subscribers:

* a worker's :func:`krait.websockets.publish` goes to the local core (which fans it out to
  this machine's subscribers) and to Redis, on ``krait:<channel>``, tagged with this krait's
  node id;
* the master runs a relay thread subscribed to ``krait:*``; a message from another node is
  handed to the core with ``krait_server_publish`` (thread-safe, never blocking the loop), a
  message tagged with this node's own id is skipped: it was delivered locally already, so each
  subscriber gets each message exactly once.

Redis pub/sub is at-most-once: what is published while Redis is unreachable is lost. Both
sides log the change of state (once, not per message) and count what they could not send or
receive; the relay reconnects and subscribes again with a growing pause (0.2 s to 5 s).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

PREFIX = b"krait:"
#: What ``config.pubsub`` and ``--pubsub`` may start with.
URL_SCHEMES = ("redis://", "rediss://", "unix://")
#: The node id travels with each message: 16 random bytes per krait (master and its workers).
NODE_ID_BYTES = 16
_TEXT, _BINARY = 1, 2


def _log(message: str) -> None:
    sys.stderr.write(f"krait: {message}\n")
    sys.stderr.flush()


def new_node_id() -> str:
    """A fresh node id, as the hex text passed to the workers (``KRAIT_NODE_ID``)."""
    return os.urandom(NODE_ID_BYTES).hex()


def _client(url: str, timeout: float | None) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=timeout,
                                health_check_interval=0)


def encode(node_id: bytes, kind: int, payload: bytes) -> bytes:
    return node_id + bytes((kind,)) + payload


def decode(data: bytes) -> tuple[bytes, int, bytes] | None:
    """(node id, kind, payload) of a message from Redis, or None when it is not one of ours."""
    if len(data) < NODE_ID_BYTES + 1 or data[NODE_ID_BYTES] not in (_TEXT, _BINARY):
        return None
    return data[:NODE_ID_BYTES], data[NODE_ID_BYTES], data[NODE_ID_BYTES + 1:]


class Publisher:
    """A worker's side: publish to Redis (a short timeout; failures are counted and logged,
    never raised into the page that published)."""

    def __init__(self, url: str, node_id: str) -> None:
        self.url = url
        self.node_id = bytes.fromhex(node_id)
        self.sent = 0
        self.failed = 0
        self._redis: Any = None
        self._down_since: float | None = None
        self._lock = threading.Lock()

    def publish(self, channel: str, message: str | bytes) -> bool:
        kind, payload = (_TEXT, message.encode("utf-8")) if isinstance(message, str) \
            else (_BINARY, bytes(message))
        data = encode(self.node_id, kind, payload)
        import redis

        with self._lock:
            try:
                if self._redis is None:
                    self._redis = _client(self.url, timeout=0.5)
                self._redis.publish(PREFIX + channel.encode("utf-8"), data)
            except (redis.RedisError, OSError) as exc:
                self.failed += 1
                self._redis = None
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    _log(f"pubsub: cannot publish to {self.url} ({exc}); messages for other "
                         "machines are lost until it is back (counted)")
                return False
            if self._down_since is not None:
                _log(f"pubsub: publishing to {self.url} again ({self.failed} messages lost)")
                self._down_since = None
            self.sent += 1
            return True


class Relay:
    """The master's side: a thread that delivers other nodes' messages to local subscribers.

    :param url: the Redis URL (``redis://host:6379/0``).
    :param deliver: called with (channel bytes, payload bytes, binary) from the relay thread;
        the core's ``publish`` (thread-safe).
    :param node_id: this krait's node id (hex), as its workers have it.
    """

    def __init__(self, url: str, deliver: Any, node_id: str) -> None:
        self.url = url
        self.deliver = deliver
        self.node_id = bytes.fromhex(node_id)
        self.received = 0
        self.relayed = 0
        self.reconnects = 0
        self._stop = threading.Event()
        self._pubsub: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="krait-pubsub")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001 - closing from another thread is best effort
                pass
        self._thread.join(timeout=2)

    def _run(self) -> None:
        import redis

        pause = 0.2
        connected_once = False
        while not self._stop.is_set():
            try:
                client = _client(self.url, timeout=None)
                self._pubsub = pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(PREFIX + b"*")
                _log(f"pubsub: {'re' if connected_once else ''}subscribed to {self.url}")
                connected_once = True
                pause = 0.2
                for message in pubsub.listen():
                    if self._stop.is_set():
                        return
                    self._handle(message)
            except (redis.RedisError, OSError, ValueError) as exc:
                if self._stop.is_set():
                    return
                self.reconnects += 1
                if connected_once or self.reconnects == 1:
                    _log(f"pubsub: lost {self.url} ({exc}); retrying (messages published "
                         "meanwhile are lost)")
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)

    def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") != "pmessage":
            return
        channel, data = message["channel"], message["data"]
        if not isinstance(channel, bytes) or not channel.startswith(PREFIX):
            return
        parsed = decode(data)
        if parsed is None:
            return
        node, kind, payload = parsed
        self.received += 1
        if node == self.node_id:
            return  # our own: delivered locally when it was published
        self.deliver(channel[len(PREFIX):], payload, kind == _BINARY)
        self.relayed += 1
