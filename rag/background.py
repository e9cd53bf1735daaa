"""A pass repeated in a daemon thread of the server: the webhook deliverer and the invitation sweeper."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Periodic:
    """Runs ``run_once()`` in a background thread (``start``) until ``stop``: again at once while a pass reports
    work done (a truthy result, with ``again_while_busy``), else after ``interval`` seconds. A failing pass is logged
    and the loop goes on (a database hiccup must not end it); ``run_once`` can also be called directly."""

    name = "periodic"
    again_while_busy = False
    wait_first = False  # the first pass after ``interval`` rather than at start

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self):
        raise NotImplementedError

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        if self.wait_first and self._stop.wait(self.interval):
            return
        while not self._stop.is_set():
            try:
                done = self.run_once()
                busy = self.again_while_busy and bool(done)
            except Exception:  # noqa: BLE001 - logged; the next pass may succeed
                log.exception("%s pass failed", self.name)
                busy = False
            if not busy:
                self._stop.wait(self.interval)
