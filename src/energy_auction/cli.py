"""The ``energy-auction`` command: ``local`` (the local stack), ``token`` (a bearer token),
``run-pipeline`` (one auction pipeline run against the local stack's data) and ``notices`` (the
notices still waiting for delivery)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.metadata
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from energy_auction.roles import Role
from energy_auction.settings import PREFIX, Backend, InvalidSettings, Settings

if TYPE_CHECKING:
    from energy_auction.bootstrap import Container
    from energy_auction.local.engine import RunSummary

DEFAULT_PORT = 8000
PORT_HELP = "a port is a whole number from 0 to 65535 (0 picks a free one)"


def local_settings(home: Path | None, **overrides: Any) -> Settings:
    overrides["backend"] = Backend.LOCAL
    if home is not None:
        overrides["home"] = home
    return Settings.from_env(**{k: v for k, v in overrides.items() if v is not None})


def parse_port(value: str) -> int:
    """The TCP port ``value`` names: 0 to 65535, where 0 asks the system for a free one.

    Raises
    ------
    ValueError
        ``value`` is not such a number; the message quotes it and says what a port is.
    """
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"{value!r} is not a port: {PORT_HELP}")
    return port


def listen_port(given: int | None, environ: Mapping[str, str]) -> int:
    """The port ``local`` listens on: ``--port``, else ``PORT`` (unset or empty: the default).

    Read only by ``local``, so that a bad ``PORT`` stops no other command.

    Raises
    ------
    InvalidSettings
        ``PORT`` is not a port; the message names the variable.
    """
    if given is not None:
        return given
    raw = environ.get("PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        return parse_port(raw)
    except ValueError as err:
        raise InvalidSettings(f"PORT={err}") from None


def _port(value: str) -> int:
    try:
        return parse_port(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _open_local_files(container: Any) -> None:
    """Open the local stack's databases now, so a bad home folder is reported at once, in one line.

    Raises
    ------
    LocalStoreError
        A file cannot be used; the message names it and says why.
    """
    container.order_store  # noqa: B018 (building it opens, checks and migrates the file)
    container.topic  # noqa: B018


def local_signing_secret(deps: Container, created: Callable[[Path], None] | None = None) -> str:
    """The local stack's signing secret (the file is created on first use, and then ``created`` is
    called with its path), refused as the stack refuses it, in the same words for ``local`` and
    ``token``.

    Raises
    ------
    LocalStoreError
        The secret file cannot be used, or holds a secret too short; the message names the file.
    InvalidSettings
        ``ENERGY_AUCTION_JWT_SECRET`` is too short.
    """
    from energy_auction.adapters.local import LocalStoreError
    from energy_auction.auth import TokenVerifier

    secret = deps.jwt_secret(created)
    try:
        TokenVerifier(secret)
    except ValueError as err:
        if deps.settings.jwt_secret is not None:
            raise InvalidSettings(f"ENERGY_AUCTION_JWT_SECRET is refused: {err}") from None
        raise LocalStoreError(
            f"cannot use the JWT secret file {deps.settings.jwt_secret_file}: {err}"
        ) from None
    return secret


def cmd_local(args: argparse.Namespace) -> int:
    port = listen_port(args.port, os.environ)
    # Local defaults for Powertools; anything the user exported wins. Metrics stay on: they print
    # as EMF lines, as in Lambda (disabled, Powertools never clears them and they pile up).
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "energy-auction")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

    from energy_auction import bootstrap
    from energy_auction.adapters.local import SqliteOrderStore
    from energy_auction.handlers import api, authorizer
    from energy_auction.local.engine import PipelineEngine
    from energy_auction.local.gateway import LocalGateway, LocalHttpServer
    from energy_auction.local.lambdas import LocalFunction
    from energy_auction.local.scheduler import Scheduler

    settings = local_settings(args.home)
    deps = bootstrap.Container(settings)
    local_signing_secret(deps)  # creates the secret file on first start, and checks it
    _open_local_files(deps)
    store = deps.order_store
    if isinstance(store, SqliteOrderStore):
        store.purge_expired(int(time.time()))
    engine = PipelineEngine(deps)  # installs its container (same settings and store) for the handlers
    engine.open()
    scheduler = None if args.no_schedule else Scheduler(args.every, engine.start_run, engine.wait)

    gateway = LocalGateway(LocalFunction("authorizer", authorizer.handler), LocalFunction("api", api.handler))
    try:
        server = LocalHttpServer((args.host, port), gateway)
    except OSError as err:
        engine.close()
        print(f"energy-auction: cannot listen on {args.host}:{port}: {err.strerror}", file=sys.stderr)
        return 1
    url = f"http://{args.host}:{server.server_address[1]}"

    def stop(signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    home = settings.home.resolve()
    schedule = f"every {args.every} s" if scheduler else "off (--no-schedule)"
    print(
        f"Energy Auction local stack listening on {url}\n"
        f"  home folder: {home}\n"
        f"  pipeline:    {schedule}; run one now: .venv/bin/energy-auction run-pipeline --home {home}\n"
        f"  get a token: .venv/bin/energy-auction token --home {home}\n"
        f'  try it:      curl -s -X POST {url}/orders -H "Authorization: Bearer $TOKEN" '
        "-H 'Content-Type: application/json' "
        '-d \'[{"record_id": "unique_id_1", "parameter_1": "abc", "parameter_2": 4}]\'\n'
        "Press Ctrl+C to stop.",
        flush=True,
    )
    if scheduler:
        scheduler.start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        if scheduler:
            scheduler.stop()
        server.server_close()
        engine.close()
        if isinstance(store, SqliteOrderStore):
            store.close()
    print("Energy Auction local stack stopped.", flush=True)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from energy_auction.auth import TokenVerifier, mint_token
    from energy_auction.bootstrap import Container

    if args.stage:
        settings = Settings.from_env(backend=Backend.AWS, **({"region": args.region} if args.region else {}))
    else:
        settings = local_settings(args.home)
    if args.ttl > settings.jwt_max_lifetime_seconds:
        raise InvalidSettings(
            f"--ttl {args.ttl} is longer than the service accepts: a token lives at most "
            f"{settings.jwt_max_lifetime_seconds} seconds ({PREFIX}JWT_MAX_LIFETIME_SECONDS)"
        )
    if args.stage:
        # A deployed stage: its generated secret, read with the caller's AWS credentials.
        from energy_auction.deployment import jwt_secret_name

        try:
            secret = Container(settings).secrets.secret(jwt_secret_name(args.stage), max_age_seconds=0)
        except Exception as err:  # no credentials, no access, no such stage: say which, not the stack trace
            print(
                f"energy-auction: cannot read the {args.stage} stage's JWT secret: {type(err).__name__}",
                file=sys.stderr,
            )
            return 1
        try:
            TokenVerifier(secret)  # a secret the service would refuse makes tokens nobody accepts
        except ValueError as err:
            print(f"energy-auction: the {args.stage} stage's JWT secret is refused: {err}", file=sys.stderr)
            return 2
    else:
        secret = local_signing_secret(Container(settings), _say_secret_created)
    print(
        mint_token(
            secret,
            subject=args.sub,
            ttl_seconds=args.ttl,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            role=None if args.role is None else Role(args.role),
        )
    )
    return 0


def _say_secret_created(path: Path) -> None:
    # A token signed with a secret just made is refused by a stack already running elsewhere: the
    # usual cause is a command run from another folder than the stack's.
    print(
        f"energy-auction: created a new JWT secret in {path.resolve()}; a stack running on another "
        "home folder refuses this token (give its home with --home or ENERGY_AUCTION_HOME)",
        file=sys.stderr,
    )


class ProgressLine:
    """A run's progress on one line of a terminal, rewritten in place, that other output steps around.

    ``show`` draws the line once ``after`` seconds have passed since the line was made, then at
    most every ``every`` seconds: the market's attempts while its results are not ready, then the
    orders settled of those the run took and the rate over the last ``window`` seconds. The run's
    logs are written through the line (it is a stream): it is wiped before other output and drawn
    again under each whole line of it. ``end`` wipes it for good. Plain text and carriage returns, no
    escape sequences or colours.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        max_attempts: int,
        clock: Callable[[], float] = time.monotonic,
        after: float = 2.0,
        every: float = 0.25,
        window: float = 5.0,
        columns: int = 80,
    ) -> None:
        self._stream = stream
        self._max_attempts = max_attempts
        self._clock = clock
        self._shown_from = clock() + after
        self.every = every
        self._window = window
        self._columns = columns
        self._samples: deque[tuple[float, int]] = deque()
        self._text = ""
        self._on_screen = 0  # characters of the line on the terminal now
        self._drawn_at = float("-inf")
        self._at_line_start = True  # other output ended its line: the progress line may be drawn
        self._lock = threading.Lock()

    def show(self, progress: RunSummary) -> None:
        now = self._clock()
        with self._lock:
            self._samples.append((now, progress.orders))
            while len(self._samples) > 1 and self._samples[1][0] <= now - self._window:
                self._samples.popleft()
            if now < self._shown_from or now - self._drawn_at < self.every:
                return
            self._text = self._describe(progress, now)[: self._columns - 1]
            self._drawn_at = now
            self._draw()

    def _describe(self, progress: RunSummary, now: float) -> str:
        if not progress.staged:
            if not progress.attempts:
                return "asking the market for results"
            tried = f"{progress.attempts} of {self._max_attempts} attempts"
            return f"waiting for the market: not ready after {tried}"
        text = f"settled {progress.orders:,} / {progress.staged:,} orders"
        since, settled = self._samples[0]
        if progress.orders < progress.staged and now > since:
            text += f" ({(progress.orders - settled) / (now - since):,.1f} orders/s)"
        return text

    def _draw(self) -> None:
        if self._at_line_start and self._text:
            self._stream.write("\r" + self._text.ljust(self._on_screen))
            self._stream.flush()
            self._on_screen = max(self._on_screen, len(self._text))

    def _wipe(self) -> None:
        if self._on_screen:
            self._stream.write("\r" + " " * self._on_screen + "\r")
            self._on_screen = 0

    def write(self, text: str) -> int:
        with self._lock:
            if text:
                self._wipe()
                self._stream.write(text)
                self._at_line_start = text.endswith("\n")
                self._draw()
            return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # the rest of a stream (isatty, encoding, ...) is stderr's
        return getattr(self._stream, name)

    def end(self) -> None:
        with self._lock:
            self._wipe()
            self._text = ""
            self._stream.flush()


def progress_line(
    args: argparse.Namespace,
    stream: TextIO,
    environ: Mapping[str, str],
    max_attempts: int,
    clock: Callable[[], float] = time.monotonic,
) -> ProgressLine | None:
    """The progress line ``run-pipeline`` draws on ``stream``: only on a terminal that can rewrite a
    line (not ``TERM=dumb``), unless ``--no-progress``."""
    if args.no_progress or environ.get("TERM") == "dumb" or not stream.isatty():
        return None
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        columns = 0
    # A terminal whose size is not known (0, as a new pseudo-terminal says) is taken as 80 wide.
    return ProgressLine(
        stream, max_attempts=max_attempts, clock=clock, after=args.progress_after, columns=columns or 80
    )


@contextlib.contextmanager
def _progress_drawn(line: ProgressLine | None, progress: Callable[[], RunSummary]) -> Iterator[None]:
    """While it lasts, a thread draws ``progress()`` on the line every ``line.every`` seconds."""
    if line is None:
        yield
        return
    stop = threading.Event()

    def draw() -> None:
        while not stop.wait(line.every):
            line.show(progress())

    thread = threading.Thread(target=draw, name="progress-line", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        line.end()


def _quiet_logs() -> None:
    """Warnings and errors only on stderr, unless ``POWERTOOLS_LOG_LEVEL`` says otherwise. The
    Logger was built at import, before this default was set, so its level is set here too."""
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "energy-auction")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from energy_auction.observability import logger

    logger.setLevel(os.environ["POWERTOOLS_LOG_LEVEL"].upper())


def cmd_run_pipeline(args: argparse.Namespace) -> int:
    _quiet_logs()

    from energy_auction.bootstrap import Container
    from energy_auction.local.engine import PipelineEngine

    settings = local_settings(
        args.home,
        market_seed=args.seed,
        market_ready_probability=args.ready_probability,
        market_accept_probability=args.accept_probability,
        pipeline_retry_seconds=args.retry_seconds,
        pipeline_max_attempts=args.max_attempts,
    )
    container = Container(settings)
    _open_local_files(container)
    line = progress_line(args, sys.stderr, os.environ, settings.pipeline_max_attempts)
    # On a terminal the run's logs go through the line (a stream: write, flush, the rest stderr's),
    # so that it steps around them.
    logs = sys.stderr if line is None else cast(TextIO, line)
    with _json_on_stdout(logs), PipelineEngine(container, delivery_grace_seconds=args.notice_wait) as engine:
        run_id = engine.start_run()
        with _progress_drawn(line, lambda: engine.progress(run_id)):
            summary = engine.wait(run_id)
    if summary.notices_undelivered:
        print(
            f"energy-auction: {summary.notices_undelivered} notices are not delivered yet (is Slack "
            "answering?); they stay queued and are retried: see 'energy-auction notices'",
            file=sys.stderr,
        )
    # duration_seconds is the execution's; command_seconds the whole command's, imports included.
    report = {**summary.as_dict(), "command_seconds": round(time.monotonic() - args.started, 3)}
    print(json.dumps(report, indent=2))
    return 0 if summary.status == "SUCCEEDED" else 1


def cmd_notices(args: argparse.Namespace) -> int:
    _quiet_logs()

    from energy_auction.bootstrap import Container, use
    from energy_auction.handlers import notify
    from energy_auction.local.delivery import NoticeDelivery
    from energy_auction.local.lambdas import LocalFunction
    from energy_auction.orders import iso_utc

    container = Container(local_settings(args.home))
    _open_local_files(container)
    delivered = 0
    if args.deliver:
        use(container)  # the notifier handler runs in this process, on this home folder
        delivery = NoticeDelivery(
            container.topic,
            LocalFunction("energy-auction-notify", notify.handler, 180),
            container.settings.notice_delivery_lease_seconds,
        )
        with _json_on_stdout():
            delivered = delivery.deliver_due()
    waiting = container.topic.undelivered()
    owed = container.order_store.overdue_notices(int(container.clock()), 1000)
    report: dict[str, Any] = {
        "undelivered": len(waiting),
        "overdue_rejections": len(owed),
        "notices": [
            {
                "message_id": m.message_id,
                "kind": m.kind,
                "subject": m.subject,
                "published_at": iso_utc(m.published_at),
                "attempts": m.attempts,
                "next_attempt_at": iso_utc(m.next_attempt_at),
                "last_error": m.last_error,
            }
            for m in waiting
        ],
    }
    if args.deliver:
        report = {"delivered": delivered, **report}
    print(json.dumps(report, indent=2))
    return 0


@contextlib.contextmanager
def _json_on_stdout(logs: TextIO | None = None) -> Iterator[None]:
    """While it lasts, stdout carries only the command's JSON: log and EMF metric lines go to
    ``logs`` (default: stderr), and so does what is written to stderr (warnings)."""
    import logging

    from energy_auction.observability import logger

    logs = sys.stderr if logs is None else logs
    handler = logger.registered_handler
    previous = handler.setStream(logs) if isinstance(handler, logging.StreamHandler) else None
    try:
        with contextlib.redirect_stdout(logs), contextlib.redirect_stderr(logs):
            yield
    finally:
        if previous is not None and isinstance(handler, logging.StreamHandler):
            handler.setStream(previous)


def _interval(value: str) -> int:
    from energy_auction.local.scheduler import parse_interval

    try:
        return parse_interval(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 <= number <= 3600:
        raise argparse.ArgumentTypeError("a wait is between 0 and 3600 seconds")
    return number


def _subject(value: str) -> str:
    from energy_auction.auth import SUBJECT_RULE, is_subject

    if not is_subject(value):
        raise argparse.ArgumentTypeError(f"{value!r} is refused: {SUBJECT_RULE}")
    return value


def _probability(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError("a probability is between 0 and 1")
    return number


def _setting_default(name: str) -> str:
    """How ``--help`` shows a default that a setting gives: its variable, else its value."""
    default = next(f.default for f in dataclasses.fields(Settings) if f.name == name)
    return f"default: ${PREFIX}{name.upper()} or {default}"


def _add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str
) -> argparse.ArgumentParser:
    """A subcommand whose one-line summary is both its entry in the list and its own --help."""
    return commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="energy-auction",
        description="The Energy Auction local stack and its tools. "
        "Start with 'energy-auction local', then get a token with 'energy-auction token'.",
    )
    root.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    home_help = "the local stack's folder (default: $ENERGY_AUCTION_HOME or .energy-auction)"
    local = _add_command(
        commands,
        "local",
        "start the local stack in the foreground: the API, the pipeline's schedule, Slack notices",
    )
    local.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    local.add_argument(
        "--port",
        type=_port,
        default=None,
        help=f"port to listen on (default: $PORT or {DEFAULT_PORT}; 0 picks a free one)",
    )
    local.add_argument("--home", type=Path, default=None, help=home_help)
    local.add_argument(
        "--every",
        type=_interval,
        default=300,
        metavar="INTERVAL",
        help="start a pipeline run this often, e.g. 30s, 5m, 1h (default 5m, like the AWS schedule)",
    )
    local.add_argument("--no-schedule", action="store_true", help="do not run the pipeline on a schedule")
    local.set_defaults(func=cmd_local)

    run = _add_command(
        commands,
        "run-pipeline",
        "run the auction pipeline once now on the local stack's data; prints a JSON summary",
    )
    run.add_argument("--home", type=Path, default=None, help=home_help)
    run.add_argument(
        "--seed", type=int, default=None, help="seed the simulated market (reproducible outcomes)"
    )
    run.add_argument(
        "--ready-probability",
        type=_probability,
        default=None,
        metavar="P",
        help=f"chance the results are ready at each attempt ({_setting_default('market_ready_probability')})",
    )
    run.add_argument(
        "--accept-probability",
        type=_probability,
        default=None,
        metavar="P",
        help=f"chance an order is accepted ({_setting_default('market_accept_probability')})",
    )
    run.add_argument(
        "--retry-seconds",
        type=int,
        default=None,
        metavar="SECONDS",
        help=f"wait between attempts ({_setting_default('pipeline_retry_seconds')})",
    )
    run.add_argument(
        "--max-attempts",
        type=int,
        default=None,
        metavar="N",
        help=f"attempts before giving up ({_setting_default('pipeline_max_attempts')})",
    )
    run.add_argument(
        "--notice-wait",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="after the run, wait at most this long for its notices to be delivered; what is left "
        "stays queued and is retried (default 10)",
    )
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="draw no progress line on stderr; it is drawn only when stderr is a terminal and TERM is "
        "not dumb, and cleared before the summary",
    )
    run.add_argument(
        "--progress-after",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="draw the progress line once the run has taken this long (default 2; 0: at once)",
    )
    run.set_defaults(func=cmd_run_pipeline)

    notices = _add_command(
        commands,
        "notices",
        "show the notices waiting for delivery (Slack down or slow); --deliver tries them now",
    )
    notices.add_argument("--home", type=Path, default=None, help=home_help)
    notices.add_argument(
        "--deliver", action="store_true", help="deliver every notice that is due now, then report"
    )
    notices.set_defaults(func=cmd_notices)

    token = _add_command(
        commands, "token", "print a bearer token for the local stack, or for a deployed stage with --stage"
    )
    token.add_argument(
        "--sub", type=_subject, default="local-trader", help="the token's subject (default local-trader)"
    )
    token.add_argument(
        "--ttl",
        type=int,
        default=3600,
        help="seconds until the token expires (default 3600, at most "
        f"{_setting_default('jwt_max_lifetime_seconds').removeprefix('default: ')})",
    )
    token.add_argument(
        "--role",
        choices=[role.value for role in Role],
        default=None,
        help="the token's role claim (default: none, which the service reads as trader)",
    )
    token.add_argument("--home", type=Path, default=None, help=home_help)
    token.add_argument(
        "--stage",
        default=None,
        help="a deployed stage (dev, prod): sign with its secret from Secrets Manager",
    )
    token.add_argument(
        "--region", default=None, help="AWS region of the stage (default: your AWS configuration)"
    )
    token.set_defaults(func=cmd_token)
    return root


def _version() -> str:
    try:
        return importlib.metadata.version("energy-auction")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    from energy_auction.adapters.local import LocalStoreError

    args = parser().parse_args(argv)
    args.started = started
    if getattr(args, "ttl", 1) <= 0:
        parser().error("--ttl must be a positive number of seconds")
    try:
        return int(args.func(args))
    except (InvalidSettings, LocalStoreError) as err:
        print(f"energy-auction: {err}", file=sys.stderr)
        return 2


def entry_point() -> int:
    """The ``energy-auction`` command: :func:`main`, then a quick exit."""
    code = main()
    # The process ends now, and nothing it made needs collecting. Without this, the garbage
    # collections of the interpreter's exit walk every object moto and botocore loaded: about
    # 0.8 s after a run-pipeline, once its summary is printed.
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(entry_point())
