"""Local-stack adapters: SQLite (WAL, synchronous=FULL) for orders, files for secrets."""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from energy_auction import codec
from energy_auction.errors import ClaimLost, OrdersAlreadyProcessed, StorageUnavailable
from energy_auction.orders import Order, OrderStatus, settled_outcome

if TYPE_CHECKING:
    from energy_auction.notifications import Notice

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    record_id        TEXT PRIMARY KEY,
    status           TEXT NOT NULL,
    expires_at       INTEGER NOT NULL,
    document         TEXT NOT NULL,
    claim_run_id     TEXT,
    claim_expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, expires_at);
"""
_PENDING_SQL = (
    "SELECT document FROM orders INDEXED BY orders_by_status"
    " WHERE status = 'pending' AND expires_at > :now"
    " AND (claim_run_id IS NULL OR claim_expires_at <= :now OR claim_run_id = :run)"
    " ORDER BY expires_at, record_id"
)
"""Live pending orders no other run holds, through the (status, expires_at) index."""

_IN_CLAUSE_SIZE = 500
"""Record ids per ``IN (...)`` query, well under SQLite's limit on bound parameters."""


class SqliteOrderStore:
    """Orders in a SQLite file. Each write is one transaction; a commit is on disk when it returns.

    The JSON ``document`` column holds the order and is what reads return; ``status``,
    ``expires_at``, ``claim_run_id`` and ``claim_expires_at`` copy fields of it so that conditions
    and the pending-orders index work in SQL. Every write sets them together.

    Safe for the local stack's request threads and for another process (``run-pipeline``) using the
    same file: writers wait up to ``busy_timeout`` seconds, then ``StorageUnavailable``.
    """

    def __init__(self, path: Path, busy_timeout: float = 5.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as err:
                raise StorageUnavailable(f"the order database is busy: {err}") from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as err:
                self._db.execute("ROLLBACK")
                raise StorageUnavailable(f"the order database is busy: {err}") from None

    @staticmethod
    def _write(db: sqlite3.Connection, orders: Sequence[Order]) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO orders"
            " (record_id, status, expires_at, document, claim_run_id, claim_expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    o.record_id,
                    o.status.value,
                    o.expires_at,
                    codec.dumps(o.model_dump()),
                    o.claim_run_id,
                    o.claim_expires_at,
                )
                for o in orders
            ],
        )

    @staticmethod
    def _read(db: sqlite3.Connection, record_ids: Sequence[str]) -> dict[str, Order]:
        found: dict[str, Order] = {}
        for start in range(0, len(record_ids), _IN_CLAUSE_SIZE):
            chunk = record_ids[start : start + _IN_CLAUSE_SIZE]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT document FROM orders WHERE record_id IN ({marks})"  # noqa: S608 (placeholders only)
            for (document,) in db.execute(query, chunk):
                order = Order.model_validate(codec.loads(document))
                found[order.record_id] = order
        return found

    def put_orders(self, orders: Sequence[Order], now: int) -> None:
        if not orders:
            return
        ids = [o.record_id for o in orders]
        with self._transaction() as db:
            marks = ",".join("?" * len(ids))
            # Kept: live orders that are processed, or pending and held by a run (a claim not lapsed).
            query = (
                f"SELECT record_id FROM orders WHERE record_id IN ({marks}) AND expires_at > ?"  # noqa: S608
                " AND (status != ? OR (claim_run_id IS NOT NULL AND claim_expires_at > ?))"
            )
            processed = db.execute(query, [*ids, now, OrderStatus.PENDING.value, now]).fetchall()
            if processed:
                raise OrdersAlreadyProcessed([row[0] for row in processed])
            self._write(db, orders)

    def get_order(self, record_id: str) -> Order | None:
        with self._lock:
            row = self._db.execute("SELECT document FROM orders WHERE record_id = ?", (record_id,)).fetchone()
        return Order.model_validate(codec.loads(row[0])) if row else None

    def pending_orders(self, now: int, run_id: str | None = None) -> list[Order]:
        """Live pending orders no run (other than ``run_id``) holds, by expiry then record_id."""
        # One SELECT is a consistent snapshot by itself; BEGIN IMMEDIATE would only block writers.
        with self._lock:
            rows = self._db.execute(_PENDING_SQL, {"now": now, "run": run_id}).fetchall()
        return [Order.model_validate(codec.loads(row[0])) for row in rows]

    def claim_orders(
        self, record_ids: Sequence[str], run_id: str, now: int, lease_seconds: int
    ) -> list[Order]:
        """Claim the claimable ones of these orders in one transaction; returns them in input order."""
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        unique = list(dict.fromkeys(record_ids))
        with self._transaction() as db:
            found = self._read(db, unique)
            claimed = [
                found[r].model_copy(update={"claim_run_id": run_id, "claim_expires_at": now + lease_seconds})
                for r in unique
                if r in found and _claimable(found[r], run_id, now)
            ]
            self._write(db, claimed)
        return claimed

    def complete_order(
        self, record_id: str, run_id: str, status: OrderStatus, outcome: dict[str, Any]
    ) -> None:
        """Record the outcome if ``run_id`` holds the order (stored with ``run_id``, added when missing)."""
        stored_outcome = settled_outcome(run_id, status, outcome)
        with self._transaction() as db:
            order = self._read(db, [record_id]).get(record_id)
            if order is not None and order.status is OrderStatus.PENDING and order.claim_run_id == run_id:
                done = order.model_copy(
                    update={
                        "status": status,
                        "outcome": stored_outcome,
                        "claim_run_id": None,
                        "claim_expires_at": None,
                    }
                )
                self._write(db, [done])
            elif order is None or not order.completed_by(run_id, status):
                raise ClaimLost(f"run {run_id!r} does not hold order {record_id!r}")

    def release_order(self, record_id: str, run_id: str) -> None:
        with self._transaction() as db:
            order = self._read(db, [record_id]).get(record_id)
            if order is not None and order.status is OrderStatus.PENDING and order.claim_run_id == run_id:
                self._write(db, [order.model_copy(update={"claim_run_id": None, "claim_expires_at": None})])

    def purge_expired(self, now: int) -> int:
        """Delete expired orders (what DynamoDB's TTL sweep does); returns how many."""
        with self._transaction() as db:
            return db.execute("DELETE FROM orders WHERE expires_at <= ?", (now,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _claimable(order: Order, run_id: str, now: int) -> bool:
    """Live, pending, and free for ``run_id``: never claimed, claim lapsed, or already its own."""
    return (
        order.is_live(now)
        and order.status is OrderStatus.PENDING
        and (not order.is_claimed(now) or order.claim_run_id == run_id)
    )


class FolderResultStore:
    """Accepted results as files under a folder, at the same keys as in the S3 results bucket."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def put_result(self, key: str, document: dict[str, Any]) -> str:
        target = (self._root / key).resolve()
        if not target.is_relative_to(self._root.resolve()):
            raise ValueError(f"result key {key!r} leaves the results folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a file, and a retry rewrites the same bytes.
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        with temporary.open("w") as handle:
            handle.write(codec.dumps(document))
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(target)
        return str(target)


class JsonlNotifier:
    """Appends every notice, one JSON object a line, to a file (the local stack's notifications.jsonl)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def notify(self, notice: Notice) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        line = codec.dumps(notice.as_dict()) + "\n"
        with self._lock, self._path.open("a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def load_or_create_secret(path: Path) -> str:
    """The local JWT secret: the text of ``path``, created on first use (mode 0600, 48 random bytes)."""
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write a private temporary file, then link it into place: readers never see a partial secret,
    # and when two processes race, the first link wins and both read its value.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    value = path.read_text().strip()
    if not value:
        raise ValueError(f"the JWT secret file {path} is empty")
    return value
