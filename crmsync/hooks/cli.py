"""`crmsync hooks ...`: serve the receiver and its trigger, manage the subscriptions.

Every failure is one line on stderr and exit 1 (crmsync.cli's group); the path secret is
shown by `crmsync hooks url` and nowhere else.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from connectors.errors import ApiError, FatalError, redact
from crmsync.hooks import HooksProblem
from crmsync.settings import ConfigurationError, Settings


def _seconds(flag: str, default: float, env: str, text: str) -> Any:
    return click.option(
        flag, type=click.FloatRange(min=0), default=default, envvar=env, show_default=True, help=text
    )


DEBOUNCE = _seconds(
    "--debounce", 30.0, "CRMSYNC_HOOKS_DEBOUNCE_S", "Sync once no event came for this many seconds."
)
MAX_WAIT = _seconds(
    "--max-wait",
    120.0,
    "CRMSYNC_HOOKS_MAX_WAIT_S",
    "... or this many seconds after the oldest waiting event.",
)


def _settings(obj: Any) -> Settings:
    settings: Settings = obj.settings
    if settings.sandbox_mode:
        raise ConfigurationError(
            "hooks need a configured Keap and Customcrm: to try them, run `crmsync sandbox` and set "
            "the KEAP_* and CUSTOMCRM_* settings it prints"
        )
    return settings


def _secret(settings: Settings, create: bool = True) -> str | None:
    from crmsync.hooks.files import path_secret

    return path_secret(settings.state_dir, create=create)


def one_line(command: Callable[..., Any]) -> Callable[..., Any]:
    """Keap's refusals and unreachable servers as one line (the group prints it), the
    secret hidden."""

    @functools.wraps(command)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ApiError as exc:
            if "--debug" in sys.argv:
                raise
            text = str(exc)
            settings = getattr(click.get_current_context().obj, "_settings", None)
            secret = _secret(settings, create=False) if settings is not None else None
            from crmsync.hooks.files import hidden

            message = hidden(redact(text), secret)
            if isinstance(exc, FatalError):
                raise FatalError(message, system=exc.system) from exc
            raise HooksProblem(f"Keap's hooks: {message}") from exc
        except ValueError as exc:  # a --url refused, a registration Keap did not verify
            if "--debug" in sys.argv:
                raise
            raise HooksProblem(str(exc)) from exc

    return wrapped


@contextmanager
def _subscriptions(settings: Settings, base: str | None = None, registered: bool = True) -> Iterator[Any]:
    """Our subscriptions in Keap, at `base` (else the registered base URL; with
    `registered` False, none is needed: list and remove find ours by the secret path)."""
    from crmsync.hooks.files import hook_url, load_config, public_base
    from crmsync.hooks.subscriptions import Subscriptions, hooks_api

    secret = _secret(settings)
    assert secret is not None
    if base is None:
        config = load_config(settings.state_dir)
        if config is None and registered:
            raise ConfigurationError(
                "no hooks are registered: run `crmsync hooks register --url <public URL>`"
            )
        base = config.url if config else "https://unregistered.invalid"
    else:
        base = public_base(base, secret, settings.allow_insecure_http)
    api = hooks_api(settings)
    try:
        yield Subscriptions(api, secret, hook_url(base, secret))
    finally:
        api.close()


@click.group()
def hooks() -> None:
    """Near real time: Keap's REST hooks trigger the sync (README: Near real time)."""


@hooks.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=8780, show_default=True)
@DEBOUNCE
@MAX_WAIT
@click.option("--full-every", type=int, default=24, envvar="CRMSYNC_KEAP_FULL_PASS_EVERY", show_default=True,
              help="As for `crmsync sync` (triggered runs do not count toward it).")  # fmt: skip
@click.option("--conflict-policy", type=click.Choice(["newest", "keap", "customcrm"]),
              envvar="CRMSYNC_CONFLICT_POLICY", help="As for `crmsync sync`.")  # fmt: skip
@click.option("--vars", "raw_vars", envvar="CRMSYNC_VARS", help="As for `crmsync sync`.")
@click.pass_obj
@one_line
def serve(
    obj: Any,
    host: str,
    port: int,
    debounce: float,
    max_wait: float,
    full_every: int,
    conflict_policy: str | None,
    raw_vars: str | None,
) -> None:
    """Receive Keap's hooks and run the incremental sync when they come (foreground)."""
    from crmsync.demo import open_endpoints
    from crmsync.hooks.files import load_config
    from crmsync.hooks.service import HookService
    from crmsync.hooks.trigger import TriggerOptions
    from crmsync.lock import exclusive
    from crmsync.options import dbt_vars
    from crmsync.run import SyncOutcome, run_sync
    from pipelines.ingest import IngestOptions

    settings = _settings(obj)
    settings.validate()
    variables = dbt_vars(conflict_policy, raw_vars)

    def log(line: str) -> None:
        click.echo(f"{time.strftime('%H:%M:%S')} {line}", err=True)

    def sync(ingest: IngestOptions) -> SyncOutcome:
        # the state file's lock, as `crmsync sync` takes it: a scheduled run and a triggered one never overlap
        with exclusive(settings.db_path, "hooks serve"), open_endpoints(settings) as found:
            return run_sync(settings, found, variables, ingest)

    service = HookService(
        settings.state_dir,
        sync,
        base_ingest=IngestOptions(full_pass_every=full_every),
        options=TriggerOptions(debounce_s=debounce, max_wait_s=max(max_wait, debounce)),
        host=host,
        port=port,
        log=log,
    )
    service.start_receiver()
    config = load_config(settings.state_dir)
    log(
        f"receiving Keap's hooks on {service.local_url}/hooks/*** "
        f"({'registered at ' + config.url + '/hooks/***' if config else 'not registered yet: crmsync hooks register --url <public URL>'}); "
        f"a sync starts {debounce:g} s after the last event (at most {max(max_wait, debounce):g} s after the first). Ctrl-C stops."
    )
    if config is not None:
        _check_in_background(settings, log)
    stop = service.stopping
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        service.serve()
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()


def _check_in_background(settings: Settings, log: Callable[[str], None]) -> None:
    """The check, once the receiver listens (Keap's verification requests come to it)."""
    from crmsync.hooks.runs import scheduled_check

    def check() -> None:
        checked = scheduled_check(settings)
        if checked:
            log(checked.line)

    threading.Thread(target=check, daemon=True).start()


@hooks.command()
@click.option("--url", "base", help="The public base URL the receiver is reachable at.")
@click.pass_obj
@one_line
def url(obj: Any, base: str | None) -> None:
    """Print the URL Keap must POST to: <public base>/hooks/<secret> (the secret is in it)."""
    from crmsync.hooks.files import DEFAULT_PORT, hook_url, load_config, public_base

    settings: Settings = obj.settings
    secret = _secret(settings)
    assert secret is not None
    if base is None:
        config = load_config(settings.state_dir)
        base = config.url if config else f"http://127.0.0.1:{DEFAULT_PORT}"
    click.echo(hook_url(public_base(base, secret, True), secret))


@hooks.command()
@click.option("--url", "base", required=True, help="The public https:// base URL of `crmsync hooks serve`.")
@click.pass_obj
@one_line
def register(obj: Any, base: str) -> None:
    """Subscribe to the 13 event keys the mappings need, at <url>/hooks/<secret>, verified."""
    from crmsync.hooks.files import HookConfig, public_base, save_config

    settings = _settings(obj)
    with _subscriptions(settings, base) as subs:
        report = subs.register()
        save_config(
            settings.state_dir, HookConfig(public_base(base, subs.secret, settings.allow_insecure_http))
        )
    _statuses(report)
    if not report.ok:
        raise HooksProblem(report.line())
    click.echo(report.line())


def _statuses(report: Any) -> None:
    from crmsync.hooks import EVENT_KEYS
    from crmsync.report import table

    table(
        "subscriptions",
        ["event key", "status"],
        [[key, report.statuses.get(key, "missing")] for key in EVENT_KEYS],
    )


@hooks.command(name="list")
@click.pass_obj
@one_line
def list_(obj: Any) -> None:
    """Every subscription of this Keap account; ours are those at our hook URL."""
    from crmsync.report import table

    settings = _settings(obj)
    with _subscriptions(settings, registered=False) as subs:
        everything = subs.api.list()
        ours = {h["key"] for h in subs.ours(everything)}
        rows = [
            [
                h["key"],
                h["eventKey"],
                h["status"],
                "yes" if h["key"] in ours else "",
                subs.shown(str(h["hookUrl"])),
            ]
            for h in everything
        ]
    table(f"{len(rows)} subscriptions", ["key", "event key", "status", "ours", "hook URL"], rows)


@hooks.command()
@click.pass_obj
@one_line
def verify(obj: Any) -> None:
    """Ask Keap to verify again every subscription of ours that is not Verified."""
    _report(obj, "verify")


@hooks.command()
@click.pass_obj
@one_line
def check(obj: Any) -> None:
    """One line: where the subscriptions stand (those Keap made Inactive are re-verified).
    Exit 1 when some are not Verified or missing."""
    _report(obj, "check")


def _report(obj: Any, action: str) -> None:
    """Run `verify` or `check` on our subscriptions and say where they stand in one line
    (a HooksProblem, exit 1, when some are not Verified or missing)."""
    with _subscriptions(_settings(obj)) as subs:
        report = getattr(subs, action)()
    if not report.ok:
        raise HooksProblem(report.line())
    click.echo(report.line())


@hooks.command()
@click.pass_obj
@one_line
def remove(obj: Any) -> None:
    """Delete our subscriptions from Keap (the scheduled sync goes on alone)."""
    from crmsync.hooks.files import forget_config

    settings = _settings(obj)
    with _subscriptions(settings, registered=False) as subs:
        removed = subs.remove()
    forget_config(settings.state_dir)
    click.echo(f"hooks: {len(removed)} subscriptions removed; the scheduled sync goes on alone")
