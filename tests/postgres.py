"""A throwaway PostgreSQL cluster for the tests: `initdb` into a temporary folder, a server on
a free loopback port, stopped and removed afterwards. The server runs as the `postgres`
user when the tests run as root (initdb and postgres refuse root), else as the tests' own
user. PostgreSQL's programs come from Debian's packages (`make test` installs them when they
are missing)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

USER = "crmsync"  # the cluster's superuser
PASSWORD = "throwaway"  # for a cluster on loopback that lives as long as the tests (dlt wants one)


def bin_dir() -> Path:
    """The newest PostgreSQL's programs (Debian keeps each version in its own folder)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError("PostgreSQL is not installed: `make test` installs it (.ci/install-postgres)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_orphans(programs: Path, run_as: list[str]) -> None:
    """Clusters whose test process is gone (killed hard: pg_ctl's server outlives it) are
    stopped and removed before a new one starts."""
    for folder in Path(tempfile.gettempdir()).glob("crmsync-pg-*"):
        try:
            owner = int((folder / "owner").read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        if (folder / "data" / "postmaster.pid").exists():
            subprocess.run([*run_as, str(programs / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate",
                            "-w", "stop"], capture_output=True, check=False, timeout=60)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def cluster() -> Iterator[str]:
    """A running cluster; yields its URL (`postgresql://crmsync:throwaway@127.0.0.1:PORT/postgres`)."""
    programs = bin_dir()
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    _stop_orphans(programs, run_as)
    folder = Path(tempfile.mkdtemp(prefix="crmsync-pg-"))
    (folder / "owner").write_text(str(os.getpid()))
    if as_root:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", _free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*run_as, *command], capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    try:
        secret = folder / "password"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o644)  # read by initdb, then gone with the folder
        run(str(programs / "initdb"), "-D", str(data), "-U", USER, "-A", "scram-sha-256", f"--pwfile={secret}",
            "--no-sync", "-E", "UTF8")  # fmt: skip
        secret.unlink()
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        run(str(programs / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w",
            "start")  # fmt: skip
        try:
            yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"
        finally:
            run(str(programs / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def create_database(cluster_url: str, name: str | None = None, template: str | None = None) -> str:
    """A new database in the cluster (a copy of `template`'s, when given): its URL."""
    import uuid

    import psycopg2

    name = name or f"t_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(cluster_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'create database "{name}"' + (f' template "{template}"' if template else ""))
    finally:
        admin.close()
    return cluster_url.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    """`make postgres`: a throwaway cluster in the foreground, for a developer's own tries."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # as Ctrl-C: the cluster is stopped and removed either way
    with cluster() as url:
        print(f"PostgreSQL at {url} (Ctrl-C stops it and deletes its data)", flush=True)
        with suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
