"""The Slack webhook notifier against a real HTTP server on 127.0.0.1 standing in for Slack."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block

from energy_auction.adapters.slack import (
    MAX_RETRY_AFTER,
    MIN_POST_INTERVAL_SECONDS,
    HttpResponse,
    SlackWebhookNotifier,
    slack_message,
)
from energy_auction.notifications import Notice, NoticeKind, NotificationFailed, notice_from_message

from ..fake_slack import SECRET_PATH, FakeSlack, Reply
from ..logs import captured_logs


class Sleeps(list[float]):
    """Records the waits instead of waiting, and moves :meth:`clock` by them."""

    now = 0.0

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


class Fallback:
    def __init__(self) -> None:
        self.notices: list[Notice] = []

    def notify(self, notice: Notice) -> None:
        self.notices.append(notice)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def fallback() -> Fallback:
    return Fallback()


def notifier(url: str | None, fallback: Fallback, sleeps: Sleeps, **options: Any) -> SlackWebhookNotifier:
    """A notifier on the test's clock; without spacing between posts unless ``min_interval`` says
    (the retry tests see Slack's and the backoff's waits alone)."""
    options = {"min_interval": 0.0, **options}
    return SlackWebhookNotifier(lambda: url, fallback=fallback, sleep=sleeps, clock=sleeps.clock, **options)


FALLBACK_LIMIT = 3000
"""Characters of the plain-text fallback, as of a section's text."""


def assert_valid_block_kit(payload: dict[str, Any]) -> None:
    """What Slack's own SDK accepts: each block parses into its Block Kit model and comes back
    unchanged (no unknown key, nothing dropped; ``to_dict`` checks every length limit), and the
    whole payload encodes as UTF-8, as it must to be posted."""
    parsed = [Block.parse(block) for block in payload["blocks"]]
    assert [block.to_dict() if block else None for block in parsed] == payload["blocks"]
    json.dumps(payload, ensure_ascii=False).encode("utf-8")
    assert len(payload["text"]) <= FALLBACK_LIMIT


def mrkdwn_objects(payload: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for block in payload["blocks"]:
        found += [block["text"]] if block.get("text", {}).get("type") == "mrkdwn" else []
        found += [field for field in block.get("fields", []) if field["type"] == "mrkdwn"]
        found += [element for element in block.get("elements", []) if element["type"] == "mrkdwn"]
    return found


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


NOTICE = Notice(
    kind=NoticeKind.ORDER_REJECTED,
    title="Order unique_id_1 of trader-1 rejected",
    text="The auction rejected order unique_id_1: price <above> the clearing price & more (run run-1)",
    fields=(("record_id", "unique_id_1"), ("parameter_2", "2.1"), ("reason", "a <b> & c")),
    severity="warning",
    occurred_at="2027-01-15T08:04:59Z",
)


def test_a_notice_is_posted_as_block_kit_with_a_plain_text_fallback(
    slack: FakeSlack, fallback: Fallback, sleeps: Sleeps
) -> None:
    # Given Slack accepts posts
    # When a notice goes out
    notifier(slack.url, fallback, sleeps).notify(NOTICE)

    # Then one JSON POST reached the webhook's path, with the text and the blocks
    [request] = slack.received
    assert (request.method, request.path) == ("POST", SECRET_PATH)
    assert request.headers["Content-Type"].startswith("application/json")
    payload = request.json()
    assert payload["text"] == (
        "The auction rejected order unique_id_1: price &lt;above&gt; the clearing price &amp; more"
        " (run run-1)"
    )
    header, section, context = payload["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Order unique_id_1 of trader-1 rejected", "emoji": True},
    }
    assert section["type"] == "section"
    assert section["text"] == {"type": "mrkdwn", "text": payload["text"], "verbatim": True}
    assert section["fields"] == [
        {"type": "mrkdwn", "text": "*record_id*\nunique_id_1", "verbatim": True},
        {"type": "mrkdwn", "text": "*parameter_2*\n2.1", "verbatim": True},
        {"type": "mrkdwn", "text": "*reason*\na &lt;b&gt; &amp; c", "verbatim": True},
    ]
    assert context["type"] == "context"
    [element] = context["elements"]
    assert element["type"] == "mrkdwn"
    assert element["verbatim"] is True
    assert ":warning: *warning*" in element["text"]
    assert "`order_rejected`" in element["text"]
    assert "<!date^1800000299^{date_short_pretty} {time_secs}|2027-01-15T08:04:59Z>" in element["text"]
    # and it is Block Kit as Slack's SDK models it
    assert_valid_block_kit(payload)
    # and nothing else happened
    assert sleeps == []
    assert fallback.notices == []


def test_a_notice_without_fields_has_a_section_without_fields(
    slack: FakeSlack, fallback: Fallback, sleeps: Sleeps
) -> None:
    notifier(slack.url, fallback, sleeps).notify(Notice(NoticeKind.OTHER, "Deploy", "Deployment finished"))
    [payload] = slack.posts()
    assert payload["blocks"][1] == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "Deployment finished", "verbatim": True},
    }
    assert_valid_block_kit(payload)


def test_rate_limited_it_waits_as_long_as_retry_after_says_then_delivers(
    slack: FakeSlack, fallback: Fallback, sleeps: Sleeps
) -> None:
    # Given Slack answers 429 with Retry-After: 2, then accepts
    slack.answer(Reply(429, "rate_limited", {"Retry-After": "2"}), Reply(200))

    # When a notice goes out
    notifier(slack.url, fallback, sleeps).notify(NOTICE)

    # Then it waited 2 s and posted the same payload again
    assert sleeps == [2.0]
    first, second = slack.posts()
    assert first == second
    assert fallback.notices == []


def test_posts_are_spaced_by_the_minimum_interval_from_one_notice_to_the_next(
    slack: FakeSlack, fallback: Fallback, sleeps: Sleeps
) -> None:
    # Given the notifier's own spacing, and Slack accepting everything
    paced = notifier(slack.url, fallback, sleeps, min_interval=MIN_POST_INTERVAL_SECONDS)

    # When three notices go out back to back, then one after a long pause
    for _ in range(3):
        paced.notify(NOTICE)
    sleeps.now += 60
    paced.notify(NOTICE)

    # Then the second and third waited out the interval; the first and the late one did not wait
    assert sleeps == [MIN_POST_INTERVAL_SECONDS, MIN_POST_INTERVAL_SECONDS]
    assert len(slack.posts()) == 4


def test_a_retry_waits_for_retry_after_or_the_interval_whichever_is_longer(
    slack: FakeSlack, fallback: Fallback, sleeps: Sleeps
) -> None:
    # Given Slack asks twice to come back: once sooner than the spacing allows, once later
    paced = notifier(slack.url, fallback, sleeps, min_interval=MIN_POST_INTERVAL_SECONDS)
    slack.answer(
        Reply(429, "rate_limited", {"Retry-After": "1"}),
        Reply(429, "rate_limited", {"Retry-After": "10"}),
        Reply(200),
    )

    # When a notice goes out
    paced.notify(NOTICE)

    # Then each retry waited the longer of the two, so no two posts came closer than the interval
    assert sleeps == [MIN_POST_INTERVAL_SECONDS, 10.0]
    assert len(slack.posts()) == 3


def test_a_long_retry_after_is_capped(slack: FakeSlack, fallback: Fallback, sleeps: Sleeps) -> None:
    slack.answer(Reply(429, "rate_limited", {"Retry-After": "3600"}), Reply(200))
    notifier(slack.url, fallback, sleeps).notify(NOTICE)
    assert sleeps == [MAX_RETRY_AFTER]
    assert len(slack.posts()) == 2


def test_server_errors_are_retried_with_exponential_backoff(
    slack: FakeSlack, fallback: Fallback, sleeps: Sleeps
) -> None:
    # Given Slack fails twice with 5xx, then accepts
    slack.answer(Reply(500, "internal_error"), Reply(502, "<html>bad gateway</html>"), Reply(200))

    # When a notice goes out
    notifier(slack.url, fallback, sleeps, base_delay=1.0).notify(NOTICE)

    # Then it was delivered on the third attempt after waiting 1 s, then 2 s
    assert len(slack.posts()) == 3
    assert sleeps == [1.0, 2.0]
    assert fallback.notices == []


def test_a_dropped_connection_is_retried(slack: FakeSlack, fallback: Fallback, sleeps: Sleeps) -> None:
    # Given the first connection is closed without an answer
    slack.answer(Reply(drop=True), Reply(200))

    # When a notice goes out
    notifier(slack.url, fallback, sleeps).notify(NOTICE)

    # Then the second attempt delivered it
    assert len(slack.posts()) == 2
    assert sleeps == [1.0]


def test_a_5xx_streak_beyond_max_attempts_fails_loudly(
    slack: FakeSlack, fallback: Fallback, sleeps: Sleeps
) -> None:
    # Given Slack keeps answering 500
    slack.otherwise = Reply(500, "internal_error")

    # When a notice goes out
    with pytest.raises(NotificationFailed) as raised:
        notifier(slack.url, fallback, sleeps, max_attempts=5, base_delay=0.5).notify(NOTICE)

    # Then it tried 5 times, backing off between attempts, and says so
    assert len(slack.posts()) == 5
    assert raised.value.attempts == 5
    assert raised.value.status == 500
    assert not raised.value.permanent
    assert "after 5 attempts" in str(raised.value)
    assert "HTTP 500 internal_error" in str(raised.value)
    assert sleeps == [0.5, 1.0, 2.0, 4.0]
    # and the notice is at least in the logs
    assert fallback.notices == [NOTICE]


def test_nobody_listening_fails_after_max_attempts(fallback: Fallback, sleeps: Sleeps) -> None:
    # Given a webhook on a port where nothing listens (a server that was just closed)
    with FakeSlack() as gone:
        url = gone.url

    # When a notice goes out
    with pytest.raises(NotificationFailed) as raised:
        notifier(url, fallback, sleeps, max_attempts=3).notify(NOTICE)

    # Then each attempt failed to connect
    assert raised.value.attempts == 3
    assert raised.value.status is None
    assert "ConnectionRefusedError" in str(raised.value)
    assert sleeps == [1.0, 2.0]


@pytest.mark.parametrize(
    ("status", "body"), [(400, "invalid_payload"), (403, "invalid_token"), (404, "no_service"), (410, "")]
)
def test_client_errors_are_permanent_and_not_retried(
    slack: FakeSlack, fallback: Fallback, sleeps: Sleeps, status: int, body: str
) -> None:
    # Given Slack refuses the post
    slack.answer(Reply(status, body))

    # When a notice goes out
    with pytest.raises(NotificationFailed) as raised:
        notifier(slack.url, fallback, sleeps).notify(NOTICE)

    # Then it failed at once, with Slack's reason
    assert len(slack.received) == 1
    assert sleeps == []
    assert raised.value.permanent
    assert raised.value.attempts == 1
    assert raised.value.status == status
    assert f"HTTP {status}" in str(raised.value)
    assert body in str(raised.value)
    assert fallback.notices == [NOTICE]


def test_a_redirect_is_not_followed(slack: FakeSlack, fallback: Fallback, sleeps: Sleeps) -> None:
    # Given the webhook answers with a redirect elsewhere
    slack.answer(Reply(302, "", {"Location": "/somewhere-else"}))

    # When a notice goes out
    with pytest.raises(NotificationFailed) as raised:
        notifier(slack.url, fallback, sleeps).notify(NOTICE)

    # Then the notice was not sent anywhere else
    assert [(r.method, r.path) for r in slack.received] == [("POST", SECRET_PATH)]
    assert raised.value.status == 302


def test_without_a_webhook_the_notice_goes_to_the_fallback(fallback: Fallback, sleeps: Sleeps) -> None:
    posts: list[str] = []

    def post(url: str, body: bytes, timeout: float) -> HttpResponse:
        posts.append(url)
        return HttpResponse(200)

    notifier(None, fallback, sleeps, post=post).notify(NOTICE)

    assert fallback.notices == [NOTICE]
    assert posts == []


def test_when_the_webhook_cannot_be_read_the_notice_is_logged_and_the_error_raised(
    fallback: Fallback, sleeps: Sleeps
) -> None:
    def unreadable() -> str | None:
        raise TimeoutError("Secrets Manager did not answer")

    with pytest.raises(TimeoutError):
        SlackWebhookNotifier(unreadable, fallback=fallback, sleep=sleeps).notify(NOTICE)

    assert fallback.notices == [NOTICE]


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.slack.com/services/T0/B0/x",
        "http://127.0.0.1.example.com/hook",
        "ftp://127.0.0.1/hook",
        "file:///etc/passwd",
        "https:///services/no-host",
        "https://hooks.slack.com:notaport/services",
        "hooks.slack.com/services/T0/B0/x",
        "",
    ],
)
def test_only_https_webhooks_are_accepted_except_on_loopback(
    url: str, fallback: Fallback, sleeps: Sleeps
) -> None:
    # Given a webhook URL that is not https (nor http to this machine)
    posts: list[str] = []

    def post(target: str, body: bytes, timeout: float) -> HttpResponse:
        posts.append(target)
        return HttpResponse(200)

    # When a notice goes out
    with pytest.raises(NotificationFailed, match="must be https://") as raised:
        notifier(url, fallback, sleeps, post=post).notify(NOTICE)

    # Then nothing was posted, and the URL is not repeated
    assert posts == []
    assert raised.value.permanent
    if url:
        assert url not in str(raised.value)
    assert fallback.notices == [NOTICE]


@pytest.mark.parametrize(
    "url", ["https://hooks.slack.com/services/T0/B0/x", "http://localhost:8080/hook", "http://[::1]:9/hook"]
)
def test_https_and_loopback_webhooks_are_posted_to(url: str, fallback: Fallback, sleeps: Sleeps) -> None:
    posts: list[tuple[str, Any, float]] = []

    def post(target: str, body: bytes, timeout: float) -> HttpResponse:
        posts.append((target, json.loads(body), timeout))
        return HttpResponse(200, body="ok")

    notifier(url, fallback, sleeps, post=post, timeout=7).notify(NOTICE)

    assert posts == [(url, slack_message(NOTICE), 7)]


@pytest.mark.parametrize(
    "script",
    [
        [Reply(500, "internal_error")] * 3,
        [Reply(404, f"The requested URL {SECRET_PATH} was not found on this server.")],
        [Reply(429, SECRET_PATH, {"Retry-After": "0"})] * 3,
        [Reply(drop=True)] * 3,
    ],
    ids=["5xx streak", "404 page quoting the path", "429 body quoting the path", "dropped connections"],
)
def test_the_webhook_url_never_appears_in_errors_or_logs(
    slack: FakeSlack, fallback: Fallback, sleeps: Sleeps, script: list[Reply]
) -> None:
    # Given Slack fails in a way whose answer may quote the webhook's path
    slack.answer(*script)

    # When a notice fails to go out
    with captured_logs() as lines, pytest.raises(NotificationFailed) as raised:
        notifier(slack.url, fallback, sleeps, max_attempts=3).notify(NOTICE)

    # Then the failure was logged, and neither the logs nor the error (with its chain) hold the URL
    assert lines
    shown = "\n".join([*lines, "".join(traceback.format_exception(raised.value)), repr(raised.value)])
    assert "attempt" in shown
    assert SECRET_PATH not in shown
    assert "SECRET" not in shown
    assert raised.value.__cause__ is None


def test_a_notice_quoting_the_webhook_does_not_post_it(
    slack: FakeSlack, fallback: Fallback, sleeps: Sleeps
) -> None:
    # Given a notice whose text contains the very webhook URL (not a hooks.slack.com one)
    leaky = Notice(NoticeKind.OTHER, "Oops", f"configured webhook is {slack.url}")

    # When it goes out
    notifier(slack.url, fallback, sleeps).notify(leaky)

    # Then the URL was replaced in what Slack received
    [request] = slack.received
    assert SECRET_PATH not in request.body.decode()
    assert request.json()["text"] == "configured webhook is [redacted]"


def test_escaped_text_is_cut_to_slack_limits_without_breaking_an_entity() -> None:
    # Given a notice whose text and field are full of characters mrkdwn escapes
    notice = Notice(NoticeKind.OTHER, "t", "&" * 2999, fields=(("reason", "<" * 1899),))

    # When it becomes a Slack message
    section = slack_message(notice)["blocks"][1]

    # Then every text fits its limit and ends in a whole entity and an ellipsis
    text, field = section["text"]["text"], section["fields"][0]["text"]
    assert len(text) <= 3000
    assert len(field) <= 2000
    assert text.endswith("&amp;…")
    assert field.endswith("&lt;…")


def test_the_plain_text_fallback_is_escaped_then_cut_to_the_limit_without_breaking_an_entity() -> None:
    # Given a notice whose text is 2999 characters that mrkdwn escapes (5 characters each)
    notice = Notice(NoticeKind.OTHER, "t", "&" * 2999)

    # When it becomes a Slack message
    payload = slack_message(notice)

    # Then the fallback fits the limit once escaped, ends in a whole entity, and is the section's text
    assert len(payload["text"]) <= FALLBACK_LIMIT
    assert payload["text"].endswith("&amp;…")
    assert payload["text"] == payload["blocks"][1]["text"]["text"]


def test_user_text_in_mrkdwn_is_posted_verbatim_so_slack_links_nothing(
    slack: FakeSlack, fallback: Fallback, sleeps: Sleeps
) -> None:
    # Given a notice whose text and fields hold what Slack would turn into links and mentions
    notice = Notice(
        NoticeKind.ORDER_REJECTED,
        "Order r1 of trader-1 rejected",
        "see www.example.com, #general and @here",
        fields=(("reason", "ask @channel in #trading or mail ops@example.com"),),
        occurred_at="not a time: visit example.com",
    )

    # When it goes out
    notifier(slack.url, fallback, sleeps).notify(notice)

    # Then every mrkdwn text object asks Slack to show it as written
    [payload] = slack.posts()
    objects = mrkdwn_objects(payload)
    assert len(objects) == 3  # the section's text, the field, the context line
    assert all(item.get("verbatim") is True for item in objects), objects
    assert_valid_block_kit(payload)


def test_a_notice_with_lone_surrogates_is_posted(
    slack: FakeSlack, fallback: Fallback, sleeps: Sleeps
) -> None:
    # Given a notice built from text holding lone surrogates (JSON allows "\\udc00"; UTF-8 cannot encode it)
    notice = Notice(
        NoticeKind.OTHER, "bad \udc00 title", "bad \ud800 text", fields=(("key \udfff", "value \udbff"),)
    )

    # When it goes out
    notifier(slack.url, fallback, sleeps).notify(notice)

    # Then Slack got it at the first attempt, each surrogate shown as the replacement character
    [payload] = slack.posts()
    assert payload["blocks"][0]["text"]["text"] == "bad \ufffd title"
    assert payload["text"] == "bad \ufffd text"
    assert payload["blocks"][1]["fields"] == [
        {"type": "mrkdwn", "text": "*key \ufffd*\nvalue \ufffd", "verbatim": True}
    ]
    assert_valid_block_kit(payload)
    assert sleeps == []
    assert fallback.notices == []


# Any text, lone surrogates included (JSON can carry them as "\\udXXX" escapes; st.text leaves them out).
any_text = st.lists(st.characters() | st.integers(0xD800, 0xDFFF).map(chr), max_size=40).map("".join)
any_value = st.recursive(
    st.none() | st.booleans() | st.integers() | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=12),
    max_leaves=30,
)


@given(
    message=any_text | st.builds(json.dumps, any_value),
    kind=st.none() | st.sampled_from([k.value for k in NoticeKind]),
    subject=st.none() | any_text,
)
def test_any_message_on_the_topic_becomes_a_valid_slack_payload(
    message: str, kind: str | None, subject: str | None
) -> None:
    # When any message becomes a Slack payload
    notice = notice_from_message(message, kind, subject)
    payload = slack_message(notice)

    # Then Slack's SDK accepts it, it can be encoded, links nothing, and its fallback is a clean cut
    assert_valid_block_kit(payload)
    assert all(item.get("verbatim") is True for item in mrkdwn_objects(payload))
    assert notice.text.startswith(unescape(payload["text"]).removesuffix("…"))
