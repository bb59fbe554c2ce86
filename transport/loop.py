"""One network thread for many MQTT connections (simulated fleets).

paho's own loop (``loop_start``) gives each client a thread that waits with ``select()``, which
cannot watch a file descriptor numbered 1024 or above: a process with a few hundred agents
(each with its socket, paho's wake-up pair and its SQLite spool) runs past that, and the
clients beyond it never connect. :class:`SharedLoop` drives any number of clients from one
thread with ``selectors`` (epoll on Linux), through paho's documented external-loop hooks
(``on_socket_open/close/register_write/unregister_write``, ``loop_read/write/misc``), and
reconnects dropped clients with exponential backoff and jitter, as paho's loop would.
"""

from __future__ import annotations

import logging
import random
import selectors
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger("coldchain.transport")
_RW = selectors.EVENT_READ | selectors.EVENT_WRITE


@dataclass
class _Entry:
    client: mqtt.Client
    min_delay: float
    max_delay: float
    delay: float
    next_attempt: float = 0.0
    on_fail: Callable[[str, float], None] | None = None  # (cause, seconds to the next attempt): enqueue only


class SharedLoop:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.entries: dict[int, _Entry] = {}  # id(client) -> entry
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = False
        self._thread = threading.Thread(target=self._run, name="mqtt-shared-loop", daemon=True)

    # ---- paho's external-loop hooks (called with the client's own locks held: keep them short) ----
    def _open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with self._lock:
            self.selector.register(sock, selectors.EVENT_READ, client)

    def _close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with self._lock:
            if sock in self.selector.get_map():
                self.selector.unregister(sock)

    def _want_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with self._lock:
            if sock in self.selector.get_map():
                self.selector.modify(sock, _RW, client)

    def _done_writing(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with self._lock:
            if sock in self.selector.get_map():
                self.selector.modify(sock, selectors.EVENT_READ, client)

    # ---- clients --------------------------------------------------------------------------
    def add(self, client: mqtt.Client, min_delay: float, max_delay: float,
            on_fail: Callable[[str, float], None] | None = None) -> None:
        """Drive ``client`` (already given its broker with ``connect_async``); connect it soon.
        ``on_fail(cause, retry_in_s)`` hears each failed attempt (it must only enqueue)."""
        client.on_socket_open = self._open
        client.on_socket_close = self._close
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._done_writing
        with self._lock:  # agents start concurrently: the thread is started exactly once
            self.entries[id(client)] = _Entry(client, min_delay, max_delay, min_delay, on_fail=on_fail)
            if not self._started:
                self._started = True
                self._thread.start()

    def remove(self, client: mqtt.Client) -> None:
        """Stop reconnecting ``client`` (disconnect it first to leave cleanly)."""
        with self._lock:
            self.entries.pop(id(client), None)

    def stop(self) -> None:
        self._stop.set()
        if self._started:
            self._thread.join(timeout=5)

    # ---- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        next_misc = 0.0
        while not self._stop.is_set():
            with self._lock:
                registered = bool(self.selector.get_map())
            events = self.selector.select(timeout=0.1) if registered else []
            if not registered:
                time.sleep(0.1)
            for key, mask in events:
                client: mqtt.Client = key.data
                if mask & selectors.EVENT_READ:
                    client.loop_read()
                if mask & selectors.EVENT_WRITE:
                    client.loop_write()
            now = time.monotonic()
            if now >= next_misc:
                next_misc = now + 0.5
                self._misc(now)

    def _misc(self, now: float) -> None:
        with self._lock:
            entries = list(self.entries.values())
        for entry in entries:
            if entry.client.socket() is not None:
                entry.client.loop_misc()  # keepalive pings, timeouts
                if entry.client.is_connected():
                    entry.delay = entry.min_delay
                continue
            if now < entry.next_attempt:
                continue
            try:
                entry.client.reconnect()
            except OSError as exc:
                log.debug("connect failed: %s", exc)
                wait = entry.delay * random.uniform(1.0, 1.5)
                entry.next_attempt = now + wait
                entry.delay = min(entry.delay * 2, entry.max_delay)
                if entry.on_fail is not None:
                    entry.on_fail(f"{type(exc).__name__}: {exc}", wait)
