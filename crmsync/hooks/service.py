"""One tenant's receiver and trigger together: what `crmsync hooks serve` runs (and the
tests, in-process)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from crmsync.hooks.files import SPOOL_FILE, hook_url, path_secret
from crmsync.hooks.receiver import Receiver, ReceiverApp
from crmsync.hooks.runs import run_triggered
from crmsync.hooks.spool import Spool
from crmsync.hooks.trigger import Trigger, TriggerOptions
from crmsync.run import SyncOutcome
from pipelines.ingest import IngestOptions


class HookService:
    def __init__(
        self,
        state_dir: Path,
        sync: Callable[[IngestOptions], SyncOutcome],
        *,
        base_ingest: IngestOptions | None = None,
        options: TriggerOptions | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        secret = path_secret(state_dir)
        assert secret is not None  # created when absent
        self.secret = secret
        self.spool = Spool(state_dir / SPOOL_FILE)
        self.trigger = Trigger(
            self.spool, lambda: run_triggered(self.spool, sync, base_ingest, log), options, log=log
        )
        self.app = ReceiverApp(self.secret, self.spool, on_events=self.trigger.wake, log=log)
        self.host, self.port = host, port
        self.receiver: Receiver | None = None
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    # --- the receiver ------------------------------------------------------------------
    def start_receiver(self) -> HookService:
        """Listen (again: on the port it had, so the URL Keap has still reaches it)."""
        self.receiver = Receiver(self.app, self.host, self.port).start()
        self.port = self.receiver.port
        return self

    def stop_receiver(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver = None

    @property
    def local_url(self) -> str:
        """`http://127.0.0.1:<port>`: the base the receiver listens at on this machine."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def hook_url(self, base: str | None = None) -> str:
        return hook_url(base or self.local_url, self.secret)

    # --- the trigger ---------------------------------------------------------------------
    def start_trigger(self) -> HookService:
        """The trigger in a thread of its own (`serve` runs it in the caller's instead)."""
        self.thread = threading.Thread(target=self.trigger.serve, args=(self.stopping,), daemon=True)
        self.thread.start()
        return self

    def serve(self) -> None:
        """The trigger in this thread, until `stop`."""
        self.trigger.serve(self.stopping)

    def stop(self) -> None:
        self.stopping.set()
        self.trigger.wake()
        if self.thread is not None:
            self.thread.join(timeout=600)  # a run in progress ends first
            self.thread = None
        self.stop_receiver()
        self.spool.close()

    def __enter__(self) -> HookService:
        return self.start_receiver().start_trigger()

    def __exit__(self, *exc: object) -> None:
        self.stop()
