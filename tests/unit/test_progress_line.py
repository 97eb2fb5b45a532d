"""``run-pipeline``'s progress line, drawn on a fake terminal with a clock the test moves by hand."""

from __future__ import annotations

import io
import json
import sys
from typing import TextIO, cast

import pytest

from energy_auction.cli import ProgressLine, _json_on_stdout, parser, progress_line
from energy_auction.local.engine import RunSummary
from tests.conftest import FakeClock
from tests.terminal import screen


def summary(*, attempts: int = 1, staged: int = 0, orders: int = 0) -> RunSummary:
    return RunSummary("run-1", attempts=attempts, staged=staged, orders=orders)


@pytest.fixture
def terminal() -> io.StringIO:
    return io.StringIO()


def line_on(
    terminal: io.StringIO,
    clock: FakeClock,
    *,
    after: float = 0.0,
    every: float = 0.25,
    window: float = 5.0,
    columns: int = 80,
) -> ProgressLine:
    return ProgressLine(
        terminal, max_attempts=10, clock=clock, after=after, every=every, window=window, columns=columns
    )


def test_nothing_is_drawn_until_the_run_has_taken_the_threshold(
    terminal: io.StringIO, clock: FakeClock
) -> None:
    # Given a line shown only after 2 s
    line = line_on(terminal, clock, after=2.0)

    # When the run reports progress before then, nothing is drawn
    for _ in range(7):
        line.show(summary(staged=100, orders=5))
        clock.advance(0.25)
    assert terminal.getvalue() == ""

    # Then at 2 s the line appears
    clock.advance(0.25)
    line.show(summary(staged=100, orders=5))
    assert screen(terminal.getvalue())[-1].startswith("settled 5 / 100 orders")


def test_while_the_market_is_not_ready_the_line_counts_its_attempts(
    terminal: io.StringIO, clock: FakeClock
) -> None:
    line = line_on(terminal, clock)

    line.show(summary(attempts=0))
    assert screen(terminal.getvalue()) == ["asking the market for results"]

    clock.advance(1)
    line.show(summary(attempts=3))
    assert screen(terminal.getvalue()) == ["waiting for the market: not ready after 3 of 10 attempts"]


def test_the_rate_is_over_the_last_seconds_not_the_whole_run(terminal: io.StringIO, clock: FakeClock) -> None:
    # Given a run that settles 20 orders a second for 5 s, then 5 a second
    line = line_on(terminal, clock, window=5.0)
    settled = 0
    for second in range(11):
        line.show(summary(staged=1000, orders=settled))
        settled += 20 if second < 5 else 5
        clock.advance(1)

    # Then the line shows the orders settled of those the run took and the last 5 s's rate (not
    # the 12.5 a second of the whole run), in one row that was rewritten each time
    assert screen(terminal.getvalue()) == ["settled 125 / 1,000 orders (5.0 orders/s)"]


def test_a_run_that_settled_everything_shows_no_rate(terminal: io.StringIO, clock: FakeClock) -> None:
    line = line_on(terminal, clock)
    line.show(summary(staged=40, orders=0))
    clock.advance(1)
    line.show(summary(staged=40, orders=40))
    assert screen(terminal.getvalue()) == ["settled 40 / 40 orders"]


def test_redraws_are_at_most_every_quarter_second(terminal: io.StringIO, clock: FakeClock) -> None:
    # Given a line shown at once
    line = line_on(terminal, clock, every=0.25)

    # When progress comes every 1/16 s for one second
    for orders in range(17):
        line.show(summary(staged=100, orders=orders))
        clock.advance(1 / 16)

    # Then the line was drawn 5 times (at 0, 0.25, 0.5, 0.75 and 1 s), each a rewrite of its one row
    assert terminal.getvalue().count("\rsettled ") == 5
    assert screen(terminal.getvalue()) == ["settled 16 / 100 orders (16.0 orders/s)"]


def test_end_wipes_the_line(terminal: io.StringIO, clock: FakeClock) -> None:
    line = line_on(terminal, clock)
    line.show(summary(staged=100, orders=50))

    line.end()

    # Then the row is blank and the cursor at its start: what comes next (the summary) starts there
    assert screen(terminal.getvalue()) == [""]
    assert terminal.getvalue().endswith("\r")


def test_other_output_steps_around_the_line(terminal: io.StringIO, clock: FakeClock) -> None:
    # Given a line on screen
    line = line_on(terminal, clock)
    line.show(summary(staged=100, orders=7))

    # When log lines are written through it, the last one in two parts, as print writes
    print('{"level": "WARNING", "message": "one"}', file=line)
    line.write('{"level": "WARNING", ')
    partly = screen(terminal.getvalue())
    line.write('"message": "two"}\n')

    # Then they are whole rows, with no piece of the line in them, and the line is drawn again under
    # them, not in the middle of a log line
    assert partly[-1] == '{"level": "WARNING",'
    assert screen(terminal.getvalue()) == [
        '{"level": "WARNING", "message": "one"}',
        '{"level": "WARNING", "message": "two"}',
        "settled 7 / 100 orders",
    ]


def test_while_a_run_writes_through_the_line_its_logs_metrics_and_warnings_step_around_it(
    terminal: io.StringIO, clock: FakeClock
) -> None:
    from energy_auction.observability import logger

    # Given a line on screen, and the command's streams pointed at it as run-pipeline does
    line = line_on(terminal, clock)
    line.show(summary(staged=10, orders=1))
    with _json_on_stdout(cast(TextIO, line)):
        # When the handlers log, print their metrics (on stdout, as on Lambda) and a library warns
        logger.warning("a log line")
        print('{"_aws": {}, "OrdersAccepted": [1.0]}')
        print("a library's warning", file=sys.stderr)

    # Then each is a whole row above the line
    *rows, last = screen(terminal.getvalue())
    assert json.loads(rows[0])["message"] == "a log line"
    assert rows[1:] == ['{"_aws": {}, "OrdersAccepted": [1.0]}', "a library's warning"]
    assert last == "settled 1 / 10 orders"


def test_the_line_is_cut_to_the_terminals_width(terminal: io.StringIO, clock: FakeClock) -> None:
    line = line_on(terminal, clock, columns=20)
    line.show(summary(attempts=0))
    # one column left free, so the cursor never wraps to a new row
    assert screen(terminal.getvalue()) == ["asking the market f"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "argv", "environ", "drawn"),
    [
        (Terminal(), [], {"TERM": "xterm"}, True),
        (Terminal(), [], {}, True),
        (io.StringIO(), [], {"TERM": "xterm"}, False),  # not a terminal: a pipe, a file, a CI log
        (Terminal(), ["--no-progress"], {"TERM": "xterm"}, False),
        (Terminal(), [], {"TERM": "dumb"}, False),  # cannot be trusted to rewrite a line
        (Terminal(), [], {"TERM": "xterm", "NO_COLOR": "1"}, True),  # the line has no colour
    ],
)
def test_the_line_is_drawn_only_on_a_terminal_that_can_rewrite_it_unless_turned_off(
    stream: io.StringIO, argv: list[str], environ: dict[str, str], drawn: bool
) -> None:
    args = parser().parse_args(["run-pipeline", *argv])

    line = progress_line(args, stream, environ, max_attempts=10)

    assert (line is not None) == drawn


def test_the_threshold_is_two_seconds_unless_given() -> None:
    # Given a terminal and the default threshold, the line waits 2 s; --progress-after 0 shows it at once
    for argv, shown_at_once in (([], False), (["--progress-after", "0"], True)):
        clock, terminal = FakeClock(), Terminal()
        args = parser().parse_args(["run-pipeline", *argv])
        line = progress_line(args, terminal, {}, max_attempts=10, clock=clock)
        assert line is not None
        clock.advance(1.9)
        line.show(summary(attempts=0))
        assert bool(terminal.getvalue()) is shown_at_once
        clock.advance(0.1)
        line.show(summary(attempts=0))
        assert terminal.getvalue()


def test_run_pipeline_help_says_when_the_line_is_drawn_and_how_to_turn_it_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["run-pipeline", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width

    assert (
        "--no-progress draw no progress line on stderr; it is drawn only when stderr is a terminal" in shown
    )
    assert (
        "--progress-after SECONDS draw the progress line once the run has taken this long (default 2" in shown
    )
