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
from energy_auction.errors import OrdersAlreadyProcessed, StorageUnavailable
from energy_auction.orders import Order, OrderStatus

if TYPE_CHECKING:
    from energy_auction.notifications import Notice

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    record_id  TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    document   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, expires_at);
"""


class SqliteOrderStore:
    """Orders in a SQLite file. Each submission is one transaction; a commit is on disk when it returns.

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

    def put_orders(self, orders: Sequence[Order], now: int) -> None:
        if not orders:
            return
        ids = [o.record_id for o in orders]
        with self._transaction() as db:
            marks = ",".join("?" * len(ids))
            query = f"SELECT record_id FROM orders WHERE record_id IN ({marks}) AND status != ? AND expires_at > ?"  # noqa: S608, E501 (placeholders only)
            processed = db.execute(
                query,
                [*ids, OrderStatus.PENDING.value, now],
            ).fetchall()
            if processed:
                raise OrdersAlreadyProcessed([row[0] for row in processed])
            db.executemany(
                "INSERT OR REPLACE INTO orders (record_id, status, expires_at, document) VALUES (?, ?, ?, ?)",
                [(o.record_id, o.status.value, o.expires_at, codec.dumps(o.model_dump())) for o in orders],
            )

    def get_order(self, record_id: str) -> Order | None:
        with self._lock:
            row = self._db.execute("SELECT document FROM orders WHERE record_id = ?", (record_id,)).fetchone()
        return Order.model_validate(codec.loads(row[0])) if row else None

    def purge_expired(self, now: int) -> int:
        """Delete expired orders (what DynamoDB's TTL sweep does); returns how many."""
        with self._transaction() as db:
            return db.execute("DELETE FROM orders WHERE expires_at <= ?", (now,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


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
