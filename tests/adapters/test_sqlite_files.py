"""The local stack's SQLite files as an operator meets them: a database from the previous version,
a corrupt or unusable file, a full disk, and the purge of expired orders."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from energy_auction import codec
from energy_auction.adapters.local import (
    LEGACY_TRADER,
    SCHEMA_VERSION,
    LocalStoreError,
    LocalTopic,
    SqliteOrderStore,
)
from energy_auction.orders import (
    ORDER_TTL_SECONDS,
    RETENTION_SECONDS,
    BatchTally,
    OrderQuery,
    OrderStatus,
    RunRecord,
    trader_key,
)
from tests.adapters.stores import NOW, pending, rejected
from tests.builders import TRADER, key, keys, pending_orders

REJECTION = rejected(NOW)
"""The market's rejection of an order submitted at NOW."""

FIRST_RELEASE_SCHEMA = """
CREATE TABLE orders (
    record_id        TEXT PRIMARY KEY,
    status           TEXT NOT NULL,
    expires_at       INTEGER NOT NULL,
    document         TEXT NOT NULL,
    claim_run_id     TEXT,
    claim_expires_at INTEGER
);
CREATE INDEX orders_by_status ON orders (status, expires_at);
"""


def test_a_database_of_the_first_release_is_migrated_and_keeps_every_order(tmp_path: Path) -> None:
    # Given an orders database written by the first release: a pending and an accepted order
    path = tmp_path / "orders.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.executescript(FIRST_RELEASE_SCHEMA)
        for order in (
            pending("old-pending"),
            pending("old-accepted").model_copy(update={"status": OrderStatus.ACCEPTED}),
        ):
            document = codec.dumps(order.model_dump(exclude={"trader"}))  # no traders then
            raw.execute(
                "INSERT INTO orders VALUES (?, ?, ?, ?, NULL, NULL)",
                (order.record_id, str(order.status), order.expires_at, document),
            )

    # When this version opens it
    store = SqliteOrderStore(path)

    # Then every order is there, now the default token's trader's, the pending one is claimable,
    # both are listed, and the file is at this schema
    accepted = store.get_order(key("old-accepted", LEGACY_TRADER))
    assert accepted is not None
    assert (accepted.status, accepted.trader) == (OrderStatus.ACCEPTED, "local-trader")
    assert store.purge_expired(NOW) == 0  # the migrated rows got their purge time: not yet
    assert [o.record_id for o in pending_orders(store, NOW)] == ["old-pending"]
    listed = store.list_orders(OrderQuery(now=NOW, trader=LEGACY_TRADER)).orders
    assert sorted(o.record_id for o in listed) == ["old-accepted", "old-pending"]
    decided = REJECTION
    pending_key = key("old-pending", LEGACY_TRADER)
    assert store.claim_orders([pending_key], "run-1", NOW, 600, {pending_key: decided})
    store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    # and opening it again changes nothing
    assert SqliteOrderStore(path).get_order(pending_key).decision == decided  # type: ignore[union-attr]


SCHEMA_4 = """
CREATE TABLE orders (
    order_key          TEXT PRIMARY KEY,
    record_id          TEXT NOT NULL,
    trader_key         TEXT NOT NULL,
    listed_at          TEXT NOT NULL,
    status             TEXT NOT NULL,
    expires_at         INTEGER NOT NULL,
    document           TEXT NOT NULL,
    claim_run_id       TEXT,
    claim_expires_at   INTEGER,
    decided            INTEGER NOT NULL DEFAULT 0,
    notice_due_at      INTEGER,
    notice_lease_until INTEGER,
    purge_at           INTEGER
);
CREATE INDEX orders_by_status ON orders (status, expires_at);
CREATE INDEX owed_notices ON orders (notice_due_at) WHERE notice_due_at IS NOT NULL;
CREATE INDEX orders_by_purge ON orders (purge_at);
CREATE INDEX orders_by_trader ON orders (trader_key, listed_at);
CREATE INDEX orders_by_time ON orders (listed_at);
PRAGMA user_version = 4;
"""
"""The schema of the version before run records (orders keyed by trader; no runs tables)."""


def test_a_database_of_schema_4_is_migrated_keeps_its_orders_and_records_runs(tmp_path: Path) -> None:
    # Given an orders database of schema 4, with a pending order a run holds and an accepted one
    path = tmp_path / "orders.sqlite3"
    held = pending("held").model_copy(update={"claim_run_id": "run-0", "claim_expires_at": NOW + 600})
    done = pending("done").model_copy(update={"status": OrderStatus.ACCEPTED, "outcome": {"run_id": "run-0"}})
    with sqlite3.connect(path) as raw:
        raw.executescript(SCHEMA_4)
        for order in (held, done):
            raw.execute(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, NULL, ?)",
                (
                    order.key,
                    order.record_id,
                    trader_key(order.trader),
                    order.listed_at,
                    order.status.value,
                    order.expires_at,
                    codec.dumps(order.model_dump(exclude_none=True)),
                    order.claim_run_id,
                    order.claim_expires_at,
                    order.purge_at(),
                ),
            )
    raw.close()

    # When this version opens it
    store = SqliteOrderStore(path)

    # Then the orders are as they were: the held one is its run's, and free once the claim lapses
    assert store.get_order(key("held")) == held
    assert store.get_order(key("done")) == done
    assert list(store.pending_keys(NOW, "run-1")) == []
    assert list(store.pending_keys(NOW + 600, "run-1")) == keys(["held"])
    listed = store.list_orders(OrderQuery(now=NOW, trader=TRADER)).orders
    assert [o.record_id for o in listed] == ["held", "done"]
    # And runs are recorded, in a file now at this schema
    assert store.run_record("run-1") == RunRecord()
    store.begin_run("run-1", 1, 0, NOW)
    store.record_batch("run-1", 0, BatchTally(accepted=1, batches=1))
    store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    raw.close()
    # and opening it again keeps everything
    again = SqliteOrderStore(path)
    assert again.run_record("run-1") == RunRecord(1, 0, BatchTally(accepted=1, batches=1))
    assert again.get_order(key("held")) == held
    again.close()


def test_a_database_of_a_newer_version_is_refused_saying_so(tmp_path: Path) -> None:
    path = tmp_path / "orders.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(LocalStoreError) as refused:
        SqliteOrderStore(path)

    assert str(refused.value) == (
        f"the order database {path} was written by a newer energy-auction "
        f"(schema {SCHEMA_VERSION + 1}; this one knows {SCHEMA_VERSION})"
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is not a database, just text" * 100, "file is not a database"),
        (b"SQLite format 3\x00" + b"\xff" * 84, "file is not a database"),
    ],
)
def test_a_corrupt_database_is_one_line_naming_the_file(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "orders.sqlite3"
    path.write_bytes(content)

    with pytest.raises(LocalStoreError) as refused:
        SqliteOrderStore(path)

    assert str(refused.value) == f"cannot use the order database {path}: {reason}"


@pytest.mark.parametrize(
    ("name", "what"), [("orders.sqlite3", "order database"), ("notices.sqlite3", "notice queue")]
)
def test_an_empty_database_file_is_refused_and_left_as_it_is(tmp_path: Path, name: str, what: str) -> None:
    # Given a database file of 0 bytes (emptied by a bad copy, say), with the WAL it had beside it
    path = tmp_path / name
    path.write_bytes(b"")
    wal = tmp_path / f"{name}-wal"
    wal.write_bytes(b"frames that may still hold orders")

    # When the store opens it, it is refused in one line that says how to start afresh
    with pytest.raises(LocalStoreError) as refused:
        SqliteOrderStore(path) if name == "orders.sqlite3" else LocalTopic(path)
    assert str(refused.value) == (
        f"cannot use the {what} {path}: it is empty (0 bytes), not a database; "
        "to start afresh, delete it or move it away"
    )

    # And nothing is lost: the file and its WAL are as they were
    assert path.read_bytes() == b""
    assert wal.read_bytes() == b"frames that may still hold orders"


def test_a_database_the_store_creates_is_never_seen_empty(tmp_path: Path) -> None:
    # Given a fresh home, when the store creates its database, the file has its header at once
    path = tmp_path / "orders.sqlite3"
    store = SqliteOrderStore(path)
    assert path.stat().st_size > 0
    store.close()
    # And it opens again as the database it is
    SqliteOrderStore(path).close()


def test_a_home_that_is_a_file_is_one_line_naming_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")

    with pytest.raises(
        LocalStoreError, match=rf"^cannot use the order database {home}/orders.sqlite3: "
    ) as err:
        SqliteOrderStore(home / "orders.sqlite3")
    assert "\n" not in str(err.value)
    with pytest.raises(LocalStoreError, match=rf"^cannot use the notice queue {home}/notices.sqlite3: "):
        LocalTopic(home / "notices.sqlite3")


def test_an_expired_order_that_still_matters_to_the_pipeline_is_purged_only_after_the_retention(
    tmp_path: Path,
) -> None:
    # Given three orders: expired and accepted, expired with a decision not yet settled, and expired
    # and rejected (its notice still owed)
    store = SqliteOrderStore(tmp_path / "orders.sqlite3")
    store.put_orders([pending("done"), pending("decided"), pending("owing")], now=NOW)
    decision = REJECTION
    store.claim_orders(
        keys(["decided", "owing", "done"]),
        "run-1",
        NOW,
        600,
        {key("decided"): decision, key("owing"): decision},
    )
    store.complete_order(
        key("owing"), "run-1", OrderStatus.REJECTED, {"run_id": "run-1"}, notice_due_at=NOW + 900
    )
    store.complete_order(key("done"), "run-1", OrderStatus.ACCEPTED, {"run_id": "run-1"})
    expired = NOW + ORDER_TTL_SECONDS

    # Then at start after their expiry only the accepted one goes, the others after the retention
    assert store.purge_expired(expired) == 1
    assert store.get_order(key("done")) is None
    assert {store.get_order(key(r)) is not None for r in ("decided", "owing")} == {True}
    assert store.purge_expired(expired + RETENTION_SECONDS - 1) == 0
    assert store.purge_expired(expired + RETENTION_SECONDS) == 2


def test_a_runs_record_is_purged_with_its_batches_after_the_retention(tmp_path: Path) -> None:
    # Given a run's record with two batches, and another run's begun a minute later
    store = SqliteOrderStore(tmp_path / "orders.sqlite3")
    store.begin_run("run-1", 5, 0, NOW)
    store.record_batch("run-1", 0, BatchTally(accepted=3, batches=1))
    store.record_batch("run-1", 1, BatchTally(rejected=2, batches=1))
    store.begin_run("run-2", 1, 0, NOW + 60)

    # Then it is kept for the retention, and purged with its batches once it is over
    store.purge_expired(NOW + RETENTION_SECONDS - 1)
    assert store.run_record("run-1") == RunRecord(5, 0, BatchTally(accepted=3, rejected=2, batches=2))
    store.purge_expired(NOW + RETENTION_SECONDS)
    assert store.run_record("run-1") == RunRecord()
    assert store.run_record("run-2") == RunRecord(staged=1)
    store.close()


FULL_DISK_SCRIPT = textwrap.dedent(
    """
    import json, resource, signal, sys
    from pathlib import Path
    from energy_auction.adapters.local import SqliteOrderStore
    from energy_auction.errors import StorageUnavailable
    from tests.adapters.stores import NOW, pending, rejected

    store = SqliteOrderStore(Path(sys.argv[1]))
    # The file system refuses to grow the database past 256 KiB, as a full disk would.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
    stored = []
    for batch in range(10_000):
        orders = [pending(f"b{batch}-{i}", parameter_1="x" * 200) for i in range(50)]
        try:
            store.put_orders(orders, now=NOW)
        except StorageUnavailable as err:
            print(json.dumps({"stored": stored, "error": type(err).__name__, "message": err.message}))
            break
        stored += [o.record_id for o in orders]
    """
)


def test_a_full_disk_is_storage_unavailable_and_loses_nothing_stored(tmp_path: Path) -> None:
    # Given a process whose disk fills up while it stores orders
    path = tmp_path / "orders.sqlite3"
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_SCRIPT, str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )

    # Then the write that did not fit fails as StorageUnavailable (the API's 503 with Retry-After),
    # naming SQLite's reason, and the failure is logged
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["error"] == "StorageUnavailable"
    assert report["message"].startswith("the order database is unavailable: ")
    assert "no transaction is active" not in report["message"]
    assert "the order database failed" in done.stdout + done.stderr
    # And every order acknowledged before is there, the failed batch is not
    store = SqliteOrderStore(path)
    assert report["stored"]
    assert all(store.get_order(key(r)) is not None for r in report["stored"])
    assert store.get_order(key(f"b{len(report['stored']) // 50}-0")) is None
