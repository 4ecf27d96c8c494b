"""Running the ASGI app under uvicorn in one process, with a clean exit after a graceful
drain: uvicorn re-raises the SIGTERM (or SIGINT) it drained on, so the process would die of
the signal (exit 143) and supervisors (systemd, Kubernetes, CI) would count a normal stop as
a failure. Here a drained stop exits 0; a server that never started exits 3 (uvicorn's
startup failure)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Generator
from typing import Any

import uvicorn

STARTUP_FAILURE = 3
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DrainingServer(uvicorn.Server):
    """uvicorn's server; a stop signal begins the graceful shutdown (uvicorn's handler) and
    is not raised again once it is done."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def run(app: Any, **options: Any) -> None:
    server = DrainingServer(uvicorn.Config(app, **options))
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
