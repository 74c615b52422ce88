"""`crmsync docs`: the dbt docs site, built from a copy of the DuckDB file and served by this
process, so the state file is held only while it is copied: a sync, `status` or `sql`
started while the site is served runs as if it were not there."""

from __future__ import annotations

import functools
import http.server
import shutil
import signal
import threading
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from crmsync.settings import Settings

SITE_FILES = ("index.html", "manifest.json", "catalog.json")


class DocsError(Exception):
    """The site could not be built or served; the message says why in one line."""


def build_site(settings: Settings) -> Path:
    """Generate the site from a snapshot of the DuckDB file (crmsync.run.scratch_copy) into
    `<state>/docs/` (private, like the rest of the state folder); returns that folder. On a
    PostgreSQL warehouse, from the warehouse itself: `dbt docs generate` only reads its
    catalog, holds no lock a sync needs, and so describes the real schemas and the models
    as the last sync built them (a scratch copy has neither)."""
    from crmsync.dataflow import write_docs
    from crmsync.dbt import run_dbt, target_dir
    from crmsync.run import scratch_copy
    from reverse_etl.state import ensure_state

    site = settings.state_dir / "docs"
    source = nullcontext(settings) if settings.warehouse else scratch_copy(settings, "docs")
    with source as snapshot:
        ensure_state(snapshot.db_path)
        write_docs(snapshot.db_path)
        generated = run_dbt(["docs", "generate"], snapshot.db_path)
        if not generated.success:
            raise DocsError("dbt docs generate failed: " + "; ".join(generated.failures[:3]))
        shutil.rmtree(site, ignore_errors=True)
        site.mkdir(mode=0o700)
        for name in SITE_FILES:
            shutil.copyfile(target_dir(snapshot.db_path) / name, site / name)
    return site


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


def serve_site(site: Path, port: int, announce: Callable[[str], None]) -> None:
    """Serve the site on 127.0.0.1:`port` until Ctrl-C or SIGTERM; `announce` hears its URL."""
    handler = functools.partial(_Quiet, directory=str(site))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise DocsError(f"cannot serve the docs on 127.0.0.1:{port}: {exc.strerror}; try --port") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    announce(f"http://127.0.0.1:{server.server_address[1]}/")
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
