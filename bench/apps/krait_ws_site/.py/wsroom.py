"""The broadcast room of one worker: a module, so it is imported once per worker and shared by
its controllers (as in docs/websockets.md). ``subscribers`` is replaced, never changed in place,
so that a publisher iterates over it without taking the lock."""

import threading

lock = threading.Lock()
subscribers: tuple = ()


def join(ctrl) -> None:
    global subscribers
    with lock:
        subscribers = (*subscribers, ctrl)


def leave(ctrl) -> None:
    global subscribers
    with lock:
        subscribers = tuple(c for c in subscribers if c is not ctrl)
