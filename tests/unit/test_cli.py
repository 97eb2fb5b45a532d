"""The ``energy-auction`` command in-process: ``token`` (local and a deployed stage on moto), argument
refusals, interval parsing, and the local schedule."""

from __future__ import annotations

import importlib.metadata
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest
from moto import mock_aws

from energy_auction.auth import TokenVerifier
from energy_auction.cli import DEFAULT_PORT, listen_port, main
from energy_auction.deployment import jwt_secret_name
from energy_auction.local.scheduler import Scheduler, parse_interval
from energy_auction.settings import Settings
from tests.conftest import FakeClock
from tests.logs import captured_logs

STAGE_SECRET = "stage-secret-generated-at-deploy-0123456789abcdef"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def claims_of(token: str, secret: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, secret, algorithms=["HS256"])
    return decoded


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --- token (local stack)


def test_token_verifies_with_the_local_secret_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a local stack home with no secret yet
    home = tmp_path / "home"

    # When a token is minted for it
    code, out, _ = run(["token", "--home", str(home)], capsys)

    # Then exactly one token is printed, and it verifies with the secret file the command created
    assert code == 0
    token = out.strip()
    assert out == token + "\n"
    secret = (home / "jwt-secret").read_text().strip()
    principal = TokenVerifier(secret).verify(f"Bearer {token}")
    assert principal.subject == "local-trader"
    claims = claims_of(token, secret)
    assert claims["exp"] - claims["iat"] == 3600


def test_token_says_on_stderr_when_it_created_a_secret_and_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a folder with no stack home in it (the command run from the wrong folder)
    monkeypatch.chdir(tmp_path)

    # When a token is asked for there
    code, out, err = run(["token"], capsys)

    # Then the token is printed, and one line on stderr says a new secret was made, where, and how
    # to point the command at a running stack's home instead
    assert code == 0
    assert out.count(".") == 2
    secret = tmp_path / ".energy-auction" / "jwt-secret"
    assert err == (
        f"energy-auction: created a new JWT secret in {secret}; a stack running on another home "
        "folder refuses this token (give its home with --home or ENERGY_AUCTION_HOME)\n"
    )
    assert secret.exists()

    # And the next token, signed with that same secret, comes without a word
    code, _, err = run(["token"], capsys)
    assert (code, err) == (0, "")


def test_token_with_a_configured_secret_creates_nothing_and_says_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENERGY_AUCTION_JWT_SECRET", "a-configured-secret-of-enough-length-0123")

    code, out, err = run(["token", "--home", str(tmp_path / "home")], capsys)

    assert (code, err) == (0, "")
    assert TokenVerifier("a-configured-secret-of-enough-length-0123").verify(f"Bearer {out.strip()}")
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("sub", ["", " ", "\t\n"])
def test_token_refuses_a_subject_the_stack_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sub: str
) -> None:
    # When a token is asked for a blank subject
    with pytest.raises(SystemExit) as exited:
        main(["token", "--home", str(tmp_path / "home"), "--sub", sub])

    # Then no token is printed, the refusal names --sub and the rule, and nothing is created
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"argument --sub: {sub!r} is refused: a token's subject must have a character" in err
    assert not (tmp_path / "home").exists()


def test_token_reuses_an_existing_secret_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "jwt-secret").write_text("an-existing-secret-of-enough-length-0123456789\n")
    code, out, _ = run(["token", "--home", str(home)], capsys)
    assert code == 0
    assert TokenVerifier("an-existing-secret-of-enough-length-0123456789").verify(f"Bearer {out.strip()}")


def test_token_honours_sub_and_ttl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # When a token is minted with a subject and a lifetime
    home = tmp_path / "home"
    code, out, _ = run(["token", "--home", str(home), "--sub", "desk-7", "--ttl", "600"], capsys)

    # Then it speaks for that subject and lives that long
    assert code == 0
    secret = (home / "jwt-secret").read_text().strip()
    claims = claims_of(out.strip(), secret)
    assert claims["sub"] == "desk-7"
    assert claims["exp"] - claims["iat"] == 600
    assert abs(claims["iat"] - time.time()) < 60


def test_token_does_not_verify_with_another_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(["token", "--home", str(tmp_path / "home")], capsys)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(out.strip(), "another-secret-of-enough-length-0123456789", algorithms=["HS256"])


@pytest.mark.parametrize("ttl", ["0", "-5"])
def test_a_ttl_that_is_not_positive_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ttl: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["token", "--home", str(tmp_path / "home"), "--ttl", ttl])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "--ttl" in err
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    ("argv", "role"), [([], None), (["--role", "trader"], "trader"), (["--role", "operator"], "operator")]
)
def test_token_carries_the_role_asked_for_and_none_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], role: str | None
) -> None:
    home = tmp_path / "home"
    code, out, _ = run(["token", "--home", str(home), *argv], capsys)

    assert code == 0
    claims = claims_of(out.strip(), (home / "jwt-secret").read_text().strip())
    assert claims.get("role") == role
    assert TokenVerifier((home / "jwt-secret").read_text().strip()).verify(f"Bearer {out.strip()}").role == (
        role or "trader"
    )


def test_an_unknown_role_is_refused_by_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["token", "--home", str(tmp_path / "home"), "--role", "admin"])
    assert exited.value.code == 2
    assert "--role" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()


def test_a_ttl_of_the_longest_lifetime_is_minted_and_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    code, out, _ = run(["token", "--home", str(home), "--ttl", "86400"], capsys)

    assert code == 0
    assert TokenVerifier((home / "jwt-secret").read_text().strip()).verify(f"Bearer {out.strip()}")


@pytest.mark.parametrize(("limit", "ttl"), [(None, "86401"), ("600", "601")])
def test_a_ttl_longer_than_the_service_accepts_is_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    limit: str | None,
    ttl: str,
) -> None:
    # Given the default longest lifetime (24 h), or a configured one
    if limit is not None:
        monkeypatch.setenv("ENERGY_AUCTION_JWT_MAX_LIFETIME_SECONDS", limit)

    # When a longer-lived token is asked for
    code, out, err = run(["token", "--home", str(tmp_path / "home"), "--ttl", ttl], capsys)

    # Then no token is printed, one line says why and names the setting, and nothing is created
    assert (code, out) == (2, "")
    assert err == (
        f"energy-auction: --ttl {ttl} is longer than the service accepts: a token lives at most "
        f"{limit or 86400} seconds (ENERGY_AUCTION_JWT_MAX_LIFETIME_SECONDS)\n"
    )
    assert not (tmp_path / "home").exists()


# --- token --stage (a deployed stage's secret in Secrets Manager, on moto)


def test_stage_token_verifies_with_the_stages_secret(capsys: pytest.CaptureFixture[str]) -> None:
    with mock_aws():
        # Given the dev stage's generated signing secret in Secrets Manager
        boto3.client("secretsmanager", region_name="eu-west-1").create_secret(
            Name=jwt_secret_name("dev"), SecretString=STAGE_SECRET
        )

        # When a token is minted for the stage
        code, out, err = run(["token", "--stage", "dev", "--region", "eu-west-1", "--sub", "ops"], capsys)

    # Then it verifies with that secret
    assert (code, err) == (0, "")
    assert TokenVerifier(STAGE_SECRET).verify(f"Bearer {out.strip()}").subject == "ops"


def test_stage_token_uses_the_region_given_over_the_environment_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the prod stage lives in us-east-1, while the shell's default region is eu-west-1
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name=jwt_secret_name("prod"), SecretString=STAGE_SECRET
        )

        # When a token is minted with --region us-east-1
        code, out, err = run(["token", "--stage", "prod", "--region", "us-east-1"], capsys)

    # Then the secret is read in us-east-1, as asked (os.environ.setdefault keeps the shell's region)
    assert (code, err) == (0, ""), err
    assert TokenVerifier(STAGE_SECRET).verify(f"Bearer {out.strip()}").subject == "local-trader"


def test_stage_token_without_the_secret_exits_1_naming_the_stage(capsys: pytest.CaptureFixture[str]) -> None:
    with mock_aws():
        # Given no secret for the stage
        # When a token is asked for it
        code, out, err = run(["token", "--stage", "qa", "--region", "eu-west-1"], capsys)

    # Then the command fails with a one-line message naming the stage, and no stack trace
    assert code == 1
    assert out == ""
    assert "qa" in err
    assert err.startswith("energy-auction: ")
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# --- settings and argument refusals


def test_an_invalid_setting_exits_2_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a body limit below its minimum
    monkeypatch.setenv("ENERGY_AUCTION_MAX_BODY_BYTES", "1")

    # When any command reads the settings
    code, out, err = run(["token", "--home", str(tmp_path / "home")], capsys)

    # Then it stops with code 2 and names the variable, without a stack trace
    assert code == 2
    assert out == ""
    assert "ENERGY_AUCTION_MAX_BODY_BYTES" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("port", ["abc", "", "70000"])
@pytest.mark.parametrize("argv", [["token"], ["--help"], ["local", "--help"], ["run-pipeline", "--help"]])
def test_port_is_read_by_no_command_but_local(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    port: str,
    argv: list[str],
) -> None:
    # Given a PORT that is not a port
    monkeypatch.setenv("PORT", port)

    # When a command that does not listen runs, or help is asked for
    try:
        code = main([*argv, "--home", str(tmp_path / "home")] if argv == ["token"] else argv)
    except SystemExit as exited:  # --help prints and exits 0
        code = int(exited.code or 0)

    # Then it does its job, and says nothing about PORT
    out, err = capsys.readouterr()
    assert code == 0
    assert out
    assert "PORT" not in err


@pytest.mark.parametrize("port", ["abc", "70000", "-1", "80.5"])
def test_local_refuses_a_bad_port_variable_in_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], port: str
) -> None:
    # Given a PORT that is not a port
    monkeypatch.setenv("PORT", port)

    # When the local stack is started
    code, out, err = run(["local", "--home", str(tmp_path / "home")], capsys)

    # Then it stops at once, in one line that names PORT and says what a port is, and creates nothing
    assert code == 2
    assert out == ""
    what = "a port is a whole number from 0 to 65535 (0 picks a free one)"
    assert err == f"energy-auction: PORT={port!r} is not a port: {what}\n"
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    ("environ", "port"),
    [
        ({}, DEFAULT_PORT),
        ({"PORT": ""}, DEFAULT_PORT),
        ({"PORT": " "}, DEFAULT_PORT),
        ({"PORT": "0"}, 0),
        ({"PORT": "65535"}, 65535),
    ],
)
def test_an_unset_or_empty_port_variable_means_the_default(environ: dict[str, str], port: int) -> None:
    assert listen_port(None, environ) == port


def test_the_port_option_wins_over_the_variable() -> None:
    assert listen_port(9000, {"PORT": "not a port"}) == 9000


@pytest.mark.parametrize("port", ["abc", "65536", "-1", ""])
def test_a_bad_port_option_says_what_a_port_is(capsys: pytest.CaptureFixture[str], port: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["local", "--port", port])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --port: {port!r} is not a port: a port is a whole number from 0 to 65535" in err
    assert "invalid" not in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["local", "run-pipeline", "notices"])
def test_a_webhook_that_is_not_a_url_stops_the_command_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "hooks.slack.com/services/T0/B0/secret-part")

    code, out, err = run([command, "--home", str(tmp_path / "home")], capsys)

    assert (code, out) == (2, "")
    assert err.startswith(
        "energy-auction: SLACK_WEBHOOK_URL (or ENERGY_AUCTION_SLACK_WEBHOOK_URL) is refused"
    )
    assert "secret-part" not in err
    assert err.count("\n") == 1
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("every", ["0s", "0", "xyz", "5d", "-1m", ""])
def test_local_refuses_a_bad_schedule_interval(every: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["local", "--every", every])
    assert exited.value.code == 2
    assert "--every" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["unknown-command"], ["token", "--ttl", "soon"]])
def test_bad_command_lines_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err


@pytest.mark.parametrize("probability", ["1.5", "-0.1"])
def test_run_pipeline_refuses_a_probability_outside_0_1(
    probability: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run-pipeline", "--ready-probability", probability])
    assert exited.value.code == 2
    assert "probability" in capsys.readouterr().err


# --- parse_interval


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("90", 90), ("1", 1), (" 2M ", 120), ("10 s", 10)],
)
def test_parse_interval(text: str, seconds: int) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "xyz", "0", "0s", "0m", "-5s", "1.5m", "5d", "m", "5 minutes"])
def test_parse_interval_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_interval(text)


# --- Scheduler


class RecordingStart:
    """A start_run that records its calls; it raises on the calls listed in ``fail_on``."""

    def __init__(self, fail_on: frozenset[int] = frozenset()) -> None:
        self.calls = 0
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.calls += 1
            call = self.calls
        if call in self.fail_on:
            raise RuntimeError("the engine is busy")
        return f"run-{call}"

    def count(self) -> int:
        with self._lock:
            return self.calls


@dataclass
class FinishedRun:
    """What the engine's wait() returns, as far as the scheduler reads it."""

    run_id: str
    status: str = "SUCCEEDED"

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "orders": 3}


def finished(run_id: str) -> FinishedRun:
    return FinishedRun(run_id, "FAILED" if run_id == "run-2" else "SUCCEEDED")


@pytest.fixture
def scheduled() -> Iterator[list[Scheduler]]:
    started: list[Scheduler] = []
    yield started
    for scheduler in started:
        scheduler.stop()


def test_a_run_is_due_every_interval_of_the_clock() -> None:
    # Given a schedule of one run every 60 s, on a clock the test moves
    clock, start_run = FakeClock(0), RecordingStart()
    scheduler = Scheduler(60, start_run, finished, clock=clock)

    # Then nothing is due before the first interval, one run at each interval, none in between
    assert scheduler.run_due() is None
    clock.advance(60)
    assert scheduler.run_due() == "run-1"
    assert scheduler.run_due() is None
    clock.advance(59)
    assert scheduler.run_due() is None
    clock.advance(1)
    assert scheduler.run_due() == "run-2"
    # and a schedule that fell behind (the machine slept) starts one run, not a burst
    clock.advance(600)
    assert scheduler.run_due() == "run-3"
    assert scheduler.run_due() is None
    assert start_run.count() == 3


def test_a_failing_start_does_not_stop_the_schedule() -> None:
    # Given a start_run whose first call raises
    clock, start_run = FakeClock(0), RecordingStart(fail_on=frozenset({1}))
    scheduler = Scheduler(60, start_run, finished, clock=clock)

    # When the first run cannot start, the next one is due an interval later all the same
    clock.advance(60)
    assert scheduler.run_due() is None
    clock.advance(60)
    assert scheduler.run_due() == "run-2"


def test_the_scheduler_logs_each_runs_summary_when_it_ends() -> None:
    # Given a scheduler whose first run succeeds and second fails
    clock, start_run = FakeClock(0), RecordingStart()
    scheduler = Scheduler(60, start_run, finished, clock=clock)

    # When two runs have ended
    with captured_logs() as lines:
        for _ in range(2):
            clock.advance(60)
            scheduler.run_due()
        assert wait_until(lambda: sum("run ended" in line for line in lines) >= 2, timeout=8)

    # Then each run's summary is one log line, at error level for the failed run
    ended = sorted((json.loads(line) for line in lines if "run ended" in line), key=lambda e: e["run_id"])
    assert [(e["run_id"], e["status"], e["level"], e["orders"]) for e in ended] == [
        ("run-1", "SUCCEEDED", "INFO", 3),
        ("run-2", "FAILED", "ERROR", 3),
    ]


def test_the_schedules_thread_starts_runs_until_stopped(scheduled: list[Scheduler]) -> None:
    # Given a scheduler on the real clock, one run a second
    start_run = RecordingStart()
    scheduler = Scheduler(1, start_run, finished)
    scheduled.append(scheduler)

    # When it has run for a while, its thread starts runs
    scheduler.start()
    assert wait_until(lambda: start_run.count() >= 2, timeout=6)

    # Then once stopped its thread has ended: no further run can start
    scheduler.stop()
    assert not scheduler.running
    assert scheduler.run_due() is None


def test_a_short_jwt_secret_is_refused_before_any_token_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENERGY_AUCTION_JWT_SECRET", "too-short")

    code = main(["token", "--home", str(tmp_path)])

    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "at least 32 bytes" in captured.err


# --- A JWT secret file that cannot be used


SECRET_FILE_PROBLEMS = {
    "empty": (b"", "it is empty; delete it to have a new secret made"),
    "whitespace": (b" \n\t\n", "it is empty; delete it to have a new secret made"),
    "binary": (b"\x89PNG\r\n\x1a\n\xff\xfe", "it is not UTF-8 text"),
    "folder": (None, "Is a directory"),
    "too short": (b"short-secret\n", "the JWT secret must be at least 32 bytes"),
}


@pytest.mark.parametrize("problem", SECRET_FILE_PROBLEMS)
def test_local_and_token_refuse_an_unusable_secret_file_in_the_same_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    # Given a home whose secret file cannot be used
    content, reason = SECRET_FILE_PROBLEMS[problem]
    secret = tmp_path / "jwt-secret"
    if content is None:
        secret.mkdir()
    else:
        secret.write_bytes(content)

    # When a token is asked for, and when the stack is started
    answers = [run([command, "--home", str(tmp_path)], capsys) for command in ("token", "local")]

    # Then both stop with code 2 and the same one line, naming the file and what is wrong with it
    line = f"energy-auction: cannot use the JWT secret file {secret}: {reason}"
    for code, out, err in answers:
        assert (code, out) == (2, "")
        assert err.startswith(line)
        assert err.count("\n") == 1
    assert answers[0][2] == answers[1][2]
    # And the file is left as it was, and nothing else was created
    assert [p.name for p in tmp_path.iterdir()] == ["jwt-secret"]
    if content is not None:
        assert secret.read_bytes() == content


@pytest.mark.parametrize("command", ["token", "local"])
def test_a_home_that_is_a_file_is_one_line_for_local_and_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    home = tmp_path / "home"
    home.write_text("a file, not a folder")

    code, out, err = run([command, "--home", str(home)], capsys)

    assert (code, out) == (2, "")
    assert err.startswith(
        f"energy-auction: cannot use the JWT secret file {home}/jwt-secret: {home} is a file, not a folder"
    )
    assert err.count("\n") == 1


# --- A home folder that cannot be used, and the notices command


def test_run_pipeline_on_a_corrupt_database_says_which_file_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a home whose orders database is not a database
    (tmp_path / "orders.sqlite3").write_bytes(b"garbage" * 100)

    # When a run is asked for
    started = time.monotonic()
    code, out, err = run(["run-pipeline", "--home", str(tmp_path)], capsys)

    # Then it stops at once with one line naming the file and SQLite's reason, and no run
    assert time.monotonic() - started < 5
    assert code == 2
    assert out == ""
    database = tmp_path / "orders.sqlite3"
    assert err == f"energy-auction: cannot use the order database {database}: file is not a database\n"


@pytest.mark.parametrize("command", ["local", "run-pipeline", "notices"])
def test_an_empty_order_database_is_refused_saying_how_to_start_afresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    # Given a home whose orders database is 0 bytes
    database = tmp_path / "orders.sqlite3"
    database.write_bytes(b"")

    # When a command opens it
    code, out, err = run(
        [command, "--home", str(tmp_path), *(["--port", "0"] if command == "local" else [])], capsys
    )

    # Then it stops at once with one line naming the file and saying what to do, and keeps the file
    assert (code, out) == (2, "")
    assert err == (
        f"energy-auction: cannot use the order database {database}: it is empty (0 bytes), not a "
        "database; to start afresh, delete it or move it away\n"
    )
    assert database.read_bytes() == b""


@pytest.mark.parametrize("command", ["run-pipeline", "notices"])
def test_a_home_that_is_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    home = tmp_path / "home"
    home.write_text("a file, not a folder")

    code, out, err = run([command, "--home", str(home)], capsys)

    assert code == 2
    assert out == ""
    database = home / "orders.sqlite3"
    assert (
        err == f"energy-auction: cannot use the order database {database}: {home} is a file, not a folder\n"
    )


def test_notices_shows_what_waits_and_delivers_it_on_demand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a notice waiting in the local topic (published while Slack was down)
    from energy_auction.adapters.local import LocalTopic

    LocalTopic(tmp_path / "notices.sqlite3").publish("Energy Auction: something", "plain text notice", None)

    # When the operator looks
    code, out, _ = run(["notices", "--home", str(tmp_path)], capsys)

    # Then it is listed, with its attempts so far
    report = json.loads(out)
    assert code == 0
    assert (report["undelivered"], report["overdue_rejections"]) == (1, 0)
    assert [(n["subject"], n["attempts"], n["last_error"]) for n in report["notices"]] == [
        ("Energy Auction: something", 0, None)
    ]

    # When they deliver it now (no Slack webhook here: the notice goes to the file and the log)
    code, out, _ = run(["notices", "--home", str(tmp_path), "--deliver"], capsys)

    # Then it is delivered and nothing waits any more
    report = json.loads(out)
    assert (code, report["delivered"], report["undelivered"], report["notices"]) == (0, 1, 0, [])
    lines = (tmp_path / "notifications.jsonl").read_text().splitlines()
    assert [json.loads(line)["title"] for line in lines] == ["Energy Auction: something"]


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width


SUMMARIES = [
    ("local", "start the local stack in the foreground"),
    ("run-pipeline", "run the auction pipeline once now"),
    ("notices", "show the notices waiting for delivery"),
    ("token", "print a bearer token"),
]


def test_help_is_plain_text_and_lists_every_command_with_what_it_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = help_of([], capsys)

    assert "``" not in shown
    for command, summary in SUMMARIES:
        assert f" {command} {summary}" in shown


@pytest.mark.parametrize(("command", "summary"), SUMMARIES)
def test_each_command_describes_itself_in_its_own_help(
    command: str, summary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    own = help_of([command], capsys)

    assert summary.capitalize() in own


def test_run_pipeline_help_shows_the_market_defaults_and_where_they_come_from(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = help_of(["run-pipeline"], capsys)

    defaults = Settings()
    assert f"$ENERGY_AUCTION_MARKET_READY_PROBABILITY or {defaults.market_ready_probability}" in shown
    assert f"$ENERGY_AUCTION_MARKET_ACCEPT_PROBABILITY or {defaults.market_accept_probability}" in shown
    assert f"$ENERGY_AUCTION_PIPELINE_MAX_ATTEMPTS or {defaults.pipeline_max_attempts}" in shown


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out == f"energy-auction {importlib.metadata.version('energy-auction')}\n"
