"""How many /csub subscribers this worker accepted, for bench/websocket.py to show how the
channel's subscribers were spread over the workers: written to
$KRAIT_BENCH_SPREAD_DIR/<pid> on every change (nothing without that variable). Handshakes are
not measured, so the file write costs the numbers nothing."""

import os
import threading

_lock = threading.Lock()
_count = 0
_dir = os.environ.get("KRAIT_BENCH_SPREAD_DIR")


def joined(delta: int) -> None:
    global _count
    with _lock:
        _count += delta
        if _dir:
            with open(os.path.join(_dir, str(os.getpid())), "w") as f:
                f.write(str(_count))
