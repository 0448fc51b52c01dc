"""The version being served, and the thread that swaps it for the manifest's current one."""

import collections
import logging
import threading
import time
from pathlib import Path
from typing import Optional

from moovitamix_serving.files import SnapshotError, load_version, read_manifest
from moovitamix_serving.responses import Responses

logger = logging.getLogger("moovitamix_serving")


class LiveSnapshot:
    """Polls the manifest; when it names another version, loads and verifies that version
    beside the one being served, then swaps one reference. Requests read `current` once and
    answer from that object: a request never waits for a load, nor sees two versions.

    A version that fails to load is refused: the previous one keeps serving, `error` says
    why (for /health), and the refused version is tried again only after `retry_seconds`
    (a shared volume may show the manifest before the files) or when the manifest moves on.
    """

    def __init__(self, root: Path, poll_seconds: float = 1.0, retry_seconds: float = 30.0) -> None:
        self.root = Path(root)
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.current: Optional[Responses] = None
        self.loaded_at: Optional[float] = None  # time.time() of the swap
        self.load_seconds: Optional[float] = None  # how long the last successful load took
        self.error: Optional[str] = None
        self.manifest_version: Optional[str] = None
        self.loads: collections.Counter = collections.Counter()  # loaded, refused
        self._refused: Optional[tuple[str, float]] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def refresh(self) -> None:
        """One poll: read the manifest and load the version it names if that is new."""
        try:
            manifest = read_manifest(self.root)
        except SnapshotError as error:
            self._note_error(str(error))
            return
        if manifest is None:
            self._note_error(f"nothing published yet: no manifest in {self.root}")
            return
        wanted = manifest["current"]
        self.manifest_version = wanted
        if self.current is not None and self.current.version.version == wanted:
            self.error = None
            return
        if self._refused and self._refused[0] == wanted and time.monotonic() - self._refused[1] < self.retry_seconds:
            return
        started = time.monotonic()
        try:
            responses = Responses(load_version(self.root, wanted))
        except SnapshotError as error:
            self._refused = (wanted, time.monotonic())
            self.loads["refused"] += 1
            self._note_error(f"version {wanted} refused, {self._serving()}: {error}")
            return
        self.current = responses  # the swap: one reference, read once per request
        self.loaded_at = time.time()
        self.load_seconds = time.monotonic() - started
        self.loads["loaded"] += 1
        self._refused = None
        self.error = None
        logger.info(f"serving version {wanted} ({responses.version.meta['users']} users, loaded in {self.load_seconds:.2f} s)")

    def _serving(self) -> str:
        return f"still serving {self.current.version.version}" if self.current else "nothing served"

    def _note_error(self, message: str) -> None:
        if message != self.error:
            logger.warning(message)
        self.error = message

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="moovitamix-recs-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # the poller must outlive any surprise; the next poll tries again
                logger.exception("refreshing the serving snapshot failed")
