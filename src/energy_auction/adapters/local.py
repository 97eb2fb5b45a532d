"""Local-stack adapters: SQLite (WAL, synchronous=FULL) for orders, files for secrets."""

from __future__ import annotations

import fcntl
import os
import secrets
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from energy_auction import codec
from energy_auction.errors import (
    ClaimLost,
    OrderNotFound,
    OrdersAlreadyProcessed,
    StorageUnavailable,
)
from energy_auction.observability import logger
from energy_auction.orders import (
    RETENTION_SECONDS,
    BatchTally,
    Decision,
    NoticeClaim,
    NoticeHold,
    Order,
    OrderPage,
    OrderQuery,
    OrderStatus,
    RunRecord,
    iso_utc,
    trader_key,
)

if TYPE_CHECKING:
    from energy_auction.notifications import Notice

SCHEMA_VERSION = 6
"""``PRAGMA user_version`` of an orders database this code writes. 0 is the first release (no
decisions, no notice outbox), 2 had no purge time, 3 had no traders (orders keyed by record_id),
4 had no run records, 5 no post slots;
:meth:`SqliteOrderStore.migrate` brings an older one forward when it is opened."""

LEGACY_TRADER = "local-trader"
"""Who owns the orders of a database written before orders had traders (schema 3 and earlier):
the subject of ``energy-auction token``'s default token, which is who submitted them unless
``--sub`` said otherwise. An operator token sees them whatever they were."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
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
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, expires_at);
CREATE INDEX IF NOT EXISTS owed_notices ON orders (notice_due_at) WHERE notice_due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS orders_by_purge ON orders (purge_at);
CREATE INDEX IF NOT EXISTS orders_by_trader ON orders (trader_key, listed_at);
CREATE INDEX IF NOT EXISTS orders_by_time ON orders (listed_at);
CREATE TABLE IF NOT EXISTS runs (
    run_id   TEXT PRIMARY KEY,
    staged   INTEGER NOT NULL,
    left_for_next INTEGER NOT NULL,
    purge_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS run_batches (
    run_id   TEXT NOT NULL,
    batch    INTEGER NOT NULL,
    accepted INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    failed   INTEGER NOT NULL,
    PRIMARY KEY (run_id, batch)
);
CREATE TABLE IF NOT EXISTS post_slots (
    channel  TEXT PRIMARY KEY,
    free_at  REAL NOT NULL
);
"""
_ADDED_COLUMNS = {
    "decided": "INTEGER NOT NULL DEFAULT 0",
    "notice_due_at": "INTEGER",
    "notice_lease_until": "INTEGER",
    "purge_at": "INTEGER",
}
"""Columns a database of schema 1 to 3 may lack (its documents lack the fields too)."""
_BACKFILL_PURGE_AT = (
    "UPDATE orders SET purge_at = expires_at + CASE WHEN status = 'rejected'"
    " OR (status = 'pending' AND decided = 1) THEN :retention ELSE 0 END WHERE purge_at IS NULL"
)
"""``Order.purge_at`` for the rows of an earlier version."""
_GIVE_TRADERS = """
INSERT INTO orders (order_key, record_id, trader_key, listed_at, status, expires_at, document,
    claim_run_id, claim_expires_at, decided, notice_due_at, notice_lease_until, purge_at)
SELECT :trader_key || '/' || record_id, record_id, :trader_key,
    json_extract(document, '$.submitted_at') || '|' || :trader_key || '/' || record_id,
    status, expires_at, json_set(document, '$.trader', :trader), claim_run_id, claim_expires_at,
    decided, notice_due_at, notice_lease_until, purge_at
FROM orders_before_traders
"""
"""Schema 3 to 4: each order keyed by its trader (:data:`LEGACY_TRADER`) and record_id."""
_PENDING_SQL = (
    "SELECT expires_at, order_key FROM orders INDEXED BY orders_by_status"
    " WHERE status = 'pending' AND (expires_at > :now OR decided = 1)"
    " AND (claim_run_id IS NULL OR claim_expires_at <= :now OR claim_run_id = :run)"
    " AND (expires_at, order_key) > (:after_expiry, :after_key)"
    " ORDER BY expires_at, order_key LIMIT :limit"
)
"""A page of claimable orders (``Order.is_claimable``) through the (status, expires_at) index,
after the last one of the page before."""
_PENDING_PAGE = 1000
_OVERDUE_SQL = (
    "SELECT document FROM orders INDEXED BY owed_notices"
    " WHERE notice_due_at IS NOT NULL AND notice_due_at <= :now"
    " AND (notice_lease_until IS NULL OR notice_lease_until <= :now)"
    " ORDER BY notice_due_at, order_key LIMIT :limit"
)
_LIST_TRADER_SQL = (
    "SELECT document FROM orders INDEXED BY orders_by_trader WHERE trader_key = :trader_key"
    " AND listed_at >= :lowest AND (:before IS NULL OR listed_at < :before) AND expires_at > :now"
    " AND (:status IS NULL OR status = :status) ORDER BY listed_at DESC LIMIT :limit"
)
_LIST_ALL_SQL = (
    "SELECT document FROM orders INDEXED BY orders_by_time WHERE listed_at >= :lowest"
    " AND (:before IS NULL OR listed_at < :before) AND expires_at > :now"
    " AND (:status IS NULL OR status = :status) ORDER BY listed_at DESC LIMIT :limit"
)
"""A listing page (``OrderQuery``): a trader's through the (trader_key, listed_at) index, everyone's
through the (listed_at) index."""

_IN_CLAUSE_SIZE = 500
"""Record ids per ``IN (...)`` query, well under SQLite's limit on bound parameters."""


class LocalStoreError(RuntimeError):
    """A file of the local stack cannot be used (unreadable, not a database, a newer version).

    The message is one line that names the file and what is wrong with it."""


def _connect(path: Path, what: str, busy_timeout: float) -> sqlite3.Connection:
    """A connection to the SQLite file ``path`` (WAL, ``synchronous=FULL``: a commit is on disk).

    Raises
    ------
    LocalStoreError
        The file or its folder cannot be used; the message names ``what`` and the file.
    """
    try:
        make_private_folder(path.parent)
        try:
            found = path.stat()
        except FileNotFoundError:
            _create_database(path)
        else:
            # Every database this code makes has its header before it has its name (see
            # _create_database), so an empty file was emptied or made by something else: SQLite
            # would take it for a new database (and delete a -wal file beside it).
            if stat.S_ISREG(found.st_mode) and found.st_size == 0:
                raise LocalStoreError(
                    f"cannot use the {what} {path}: it is empty (0 bytes), not a database; "
                    "to start afresh, delete it or move it away"
                )
        db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as err:
        raise LocalStoreError(f"cannot use the {what} {path}: {_reason(err)}") from None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error as err:
        db.close()
        raise LocalStoreError(f"cannot use the {what} {path}: {_reason(err)}") from None
    return db


def _create_database(path: Path) -> None:
    """Make the SQLite file ``path``: private (0600; SQLite gives its -wal and -shm files the mode
    of the database), and in WAL mode before it appears under its name, so that another process
    opening it meanwhile finds a database, never an empty file. If another process makes it
    first, theirs is kept."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        db = sqlite3.connect(temporary, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # writes the header: the file is a database now
        finally:
            db.close()
        with suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        for leftover in (temporary, Path(f"{temporary}-wal"), Path(f"{temporary}-shm")):
            leftover.unlink(missing_ok=True)


def make_private_folder(path: Path) -> None:
    """Create the folder ``path`` and its missing parents, each for its owner only (mode 0700).

    A folder that exists keeps its mode: it may be the user's own (``--home ~/auction``), shared
    on purpose, and only the user can tell.
    """
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except FileNotFoundError:
        if path.parent == path:
            raise
        make_private_folder(path.parent)
        path.mkdir(mode=0o700, exist_ok=True)


def _private_file(path: Path, flags: int) -> int:
    """``os.open`` with ``flags``; a file it creates is for its owner only (mode 0600)."""
    return os.open(path, flags, 0o600)


@contextmanager
def _immediate(db: sqlite3.Connection, lock: threading.Lock) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (unless SQLite has done so itself)."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            # SQLite rolls a transaction back by itself on some errors (a full disk, an I/O
            # error); a second ROLLBACK would replace the real error with "no transaction".
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


@contextmanager
def _write_transaction(
    db: sqlite3.Connection, lock: threading.Lock, path: Path, what: str
) -> Iterator[sqlite3.Connection]:
    """A write transaction (:func:`_immediate`) whose SQLite failures (busy, full disk, I/O) are
    logged and become ``StorageUnavailable``."""
    try:
        with _immediate(db, lock) as inside:
            yield inside
    except sqlite3.Error as err:
        reason = _reason(err)
        logger.error(f"the {what} failed", extra={"database": str(path), "error": reason})
        raise StorageUnavailable(f"the {what} is unavailable: {reason}") from None


class SqliteOrderStore:
    """Orders in a SQLite file. Each write is one transaction; a commit is on disk when it returns.

    The JSON ``document`` column holds the order and is what reads return; the other columns copy
    fields of it so that conditions and indexes work in SQL. Every write sets them together.

    Safe for the local stack's request threads and for another process (``run-pipeline``) using the
    same file: writers wait up to ``busy_timeout`` seconds, then ``StorageUnavailable``. A database
    written by an earlier version is migrated when it is opened.

    Raises
    ------
    LocalStoreError
        The file or its folder cannot be used (on open).
    """

    def __init__(self, path: Path, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = _connect(path, "order database", busy_timeout)
        try:
            self.migrate()
        except (LocalStoreError, sqlite3.Error) as err:
            self._db.close()
            if isinstance(err, LocalStoreError):
                raise
            raise LocalStoreError(f"cannot use the order database {path}: {_reason(err)}") from None

    def migrate(self) -> None:
        """Create the schema, or bring a database of an earlier version up to :data:`SCHEMA_VERSION`."""
        with _immediate(self._db, self._lock) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LocalStoreError(
                    f"the order database {self.path} was written by a newer energy-auction "
                    f"(schema {version}; this one knows {SCHEMA_VERSION})"
                )
            exists = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'orders'").fetchone()
            if exists and version < 4:
                columns = {row[1] for row in db.execute("PRAGMA table_info(orders)")}
                for name, kind in _ADDED_COLUMNS.items():
                    if name not in columns:
                        db.execute(f"ALTER TABLE orders ADD COLUMN {name} {kind}")
                db.execute(_BACKFILL_PURGE_AT, {"retention": RETENTION_SECONDS})
                db.execute("ALTER TABLE orders RENAME TO orders_before_traders")
                for index in ("orders_by_status", "owed_notices", "orders_by_purge"):
                    db.execute(f"DROP INDEX IF EXISTS {index}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            if exists and version < 4:
                legacy = {"trader": LEGACY_TRADER, "trader_key": trader_key(LEGACY_TRADER)}
                db.execute(_GIVE_TRADERS, legacy)
                db.execute("DROP TABLE orders_before_traders")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return _write_transaction(self._db, self._lock, self.path, "order database")

    @staticmethod
    def _write(db: sqlite3.Connection, orders: Sequence[Order]) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO orders (order_key, record_id, trader_key, listed_at, status,"
            " expires_at, document, claim_run_id, claim_expires_at, decided, notice_due_at,"
            " notice_lease_until, purge_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    o.key,
                    o.record_id,
                    trader_key(o.trader),
                    o.listed_at,
                    o.status.value,
                    o.expires_at,
                    codec.dumps(o.model_dump(exclude_none=True)),
                    o.claim_run_id,
                    o.claim_expires_at,
                    int(o.decision is not None),
                    o.notice_due_at,
                    o.notice_lease_until,
                    o.purge_at(),
                )
                for o in orders
            ],
        )

    @staticmethod
    def _read(db: sqlite3.Connection, keys: Sequence[str]) -> dict[str, Order]:
        found: dict[str, Order] = {}
        for start in range(0, len(keys), _IN_CLAUSE_SIZE):
            chunk = keys[start : start + _IN_CLAUSE_SIZE]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT document FROM orders WHERE order_key IN ({marks})"  # noqa: S608 (placeholders only)
            for (document,) in db.execute(query, chunk):
                order = Order.model_validate(codec.loads(document))
                found[order.key] = order
        return found

    def _read_one(self, db: sqlite3.Connection, key: str) -> Order | None:
        return self._read(db, [key]).get(key)

    def _select(self, query: str, parameters: dict[str, Any]) -> list[Order]:
        try:
            # One SELECT is a consistent snapshot by itself; BEGIN IMMEDIATE would only block writers.
            with self._lock:
                rows = self._db.execute(query, parameters).fetchall()
        except sqlite3.Error as err:
            raise StorageUnavailable(f"the order database is unavailable: {_reason(err)}") from None
        return [Order.model_validate(codec.loads(row[0])) for row in rows]

    def put_orders(self, orders: Sequence[Order], now: int) -> None:
        if not orders:
            return
        with self._transaction() as db:
            stored = self._read(db, [o.key for o in orders])
            kept = [order.record_id for order in stored.values() if not order.is_replaceable(now)]
            if kept:
                raise OrdersAlreadyProcessed(kept)
            self._write(db, orders)

    def get_order(self, key: str) -> Order | None:
        found = self._select("SELECT document FROM orders WHERE order_key = :key", {"key": key})
        return found[0] if found else None

    def list_orders(self, query: OrderQuery) -> OrderPage:
        found = self._select(
            _LIST_TRADER_SQL if query.trader is not None else _LIST_ALL_SQL,
            {
                "lowest": query.lowest_listed_at(),
                "before": query.before,
                "now": query.now,
                "trader_key": trader_key(query.trader) if query.trader is not None else None,
                "status": query.status.value if query.status else None,
                "limit": query.limit + 1,
            },
        )
        page = found[: query.limit]
        return OrderPage(page, page[-1].listed_at if len(found) > query.limit else None)

    def cancel_order(self, key: str, now: int) -> Order:
        with self._transaction() as db:
            order = self._read_one(db, key)
            if order is None or not order.is_live(now):
                raise OrderNotFound(key.partition("/")[2])
            if order.status is OrderStatus.CANCELLED:
                return order
            if not order.is_cancellable(now):
                raise order.cancel_refused(now)
            cancelled = order.model_copy(
                update={"status": OrderStatus.CANCELLED, "cancelled_at": iso_utc(now)}
            )
            self._write(db, [cancelled])
            return cancelled

    def pending_keys(self, now: int, run_id: str) -> Iterator[str]:
        """Claimable orders' keys, oldest expiry first, a page of 1,000 at a time."""
        after: tuple[int, str] = (-1, "")
        while True:
            parameters = {"now": now, "run": run_id, "limit": _PENDING_PAGE}
            parameters.update(after_expiry=after[0], after_key=after[1])
            try:
                with self._lock:
                    rows = self._db.execute(_PENDING_SQL, parameters).fetchall()
            except sqlite3.Error as err:
                raise StorageUnavailable(f"the order database is unavailable: {_reason(err)}") from None
            for _, key in rows:
                yield key
            if len(rows) < _PENDING_PAGE:
                return
            after = (rows[-1][0], rows[-1][1])

    def retire_orders(self, keys: Sequence[str], now: int) -> None:
        """Nothing to do: ``pending_keys`` selects the claimable orders in its SQL, so an expired
        undecided order is never yielded."""
        del keys, now

    def get_orders(self, keys: Sequence[str], *, consistent: bool = True) -> list[Order]:
        """One read of the database: always consistent, whatever ``consistent`` says."""
        del consistent
        unique = list(dict.fromkeys(keys))
        try:
            with self._lock:
                found = self._read(self._db, unique)
        except sqlite3.Error as err:
            raise StorageUnavailable(f"the order database is unavailable: {_reason(err)}") from None
        return [found[k] for k in unique if k in found]

    def begin_run(self, run_id: str, staged: int, left: int, now: int) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO runs (run_id, staged, left_for_next, purge_at) VALUES (?, ?, ?, ?)",
                (run_id, staged, left, now + RETENTION_SECONDS),
            )

    def record_batch(self, run_id: str, batch: int, tally: BatchTally) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO run_batches (run_id, batch, accepted, rejected, failed)"
                " VALUES (?, ?, ?, ?, ?)",
                (run_id, batch, tally.accepted, tally.rejected, tally.failed),
            )

    def take_post_slot(self, channel: str, now: float, interval: float) -> float:
        with self._transaction() as db:
            row = db.execute("SELECT free_at FROM post_slots WHERE channel = ?", (channel,)).fetchone()
            if row is not None and row[0] > now:
                return max(0.001, float(row[0]) - now)
            db.execute(
                "INSERT OR REPLACE INTO post_slots (channel, free_at) VALUES (?, ?)",
                (channel, now + interval),
            )
        return 0.0

    def run_record(self, run_id: str) -> RunRecord:
        try:
            with self._lock:
                run = self._db.execute(
                    "SELECT staged, left_for_next FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
                counts = self._db.execute(
                    "SELECT COALESCE(SUM(accepted), 0), COALESCE(SUM(rejected), 0),"
                    " COALESCE(SUM(failed), 0), COUNT(*) FROM run_batches WHERE run_id = ?",
                    (run_id,),
                ).fetchone()
        except sqlite3.Error as err:
            raise StorageUnavailable(f"the order database is unavailable: {_reason(err)}") from None
        staged, left = run or (0, 0)
        return RunRecord(staged, left, BatchTally(*counts))

    def claim_orders(
        self,
        keys: Sequence[str],
        run_id: str,
        now: int,
        lease_seconds: int,
        decisions: Mapping[str, Decision] | None = None,
    ) -> list[Order]:
        """Claim the claimable ones of these orders in one transaction; returns them in input order."""
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        unique = list(dict.fromkeys(keys))
        given = decisions or {}
        with self._transaction() as db:
            found = self._read(db, unique)
            claimed = []
            for key in unique:
                order = found.get(key)
                if order is None or not order.is_claimable(run_id, now):
                    continue
                update: dict[str, Any] = {"claim_run_id": run_id, "claim_expires_at": now + lease_seconds}
                decision = given.get(key)
                if order.decision is None and decision is not None:
                    if decision.submitted_at != order.submitted_at:
                        continue  # replaced since the market was asked: a new order, for the next run
                    update["decision"] = decision
                claimed.append(order.model_copy(update=update))
            self._write(db, claimed)
        return claimed

    def complete_order(
        self,
        key: str,
        run_id: str,
        status: OrderStatus,
        outcome: dict[str, Any],
        *,
        notice_due_at: int | None = None,
    ) -> None:
        """Record the outcome, and for a rejection its owed notice, if ``run_id`` holds the order."""
        with self._transaction() as db:
            order = self._read_one(db, key)
            if order is not None and order.status is OrderStatus.PENDING and order.claim_run_id == run_id:
                owed = notice_due_at if status is OrderStatus.REJECTED else None
                done = order.model_copy(
                    update={
                        "status": status,
                        "outcome": outcome,
                        "claim_run_id": None,
                        "claim_expires_at": None,
                        "notice_due_at": owed,
                        "notice_lease_until": None,
                        "notice_redeliveries": None,
                        "notice_delivery": None,
                    }
                )
                self._write(db, [done])
            elif order is None or not order.completed_by(run_id, status):
                raise ClaimLost(f"run {run_id!r} does not hold order {key!r}")

    def release_order(self, key: str, run_id: str) -> None:
        with self._transaction() as db:
            order = self._read_one(db, key)
            if order is not None and order.status is OrderStatus.PENDING and order.claim_run_id == run_id:
                self._write(db, [order.model_copy(update={"claim_run_id": None, "claim_expires_at": None})])

    def claim_notices(
        self, holds: Sequence[NoticeHold], now: int, lease_seconds: int
    ) -> list[NoticeClaim | None]:
        """All of them in one transaction (one commit, however many notices): all answered, or
        ``StorageUnavailable`` and none taken."""
        if not holds:
            return []
        with self._transaction() as db:
            found = self._read(db, list(dict.fromkeys(hold.key for hold in holds)))
            answers: list[NoticeClaim | None] = []
            taken = []
            for hold in holds:
                order = found.get(hold.key)
                if order is None or not order.completed_by(hold.run_id, OrderStatus.REJECTED):
                    answers.append(NoticeClaim.UNKNOWN)
                elif order.notice_due_at is None:
                    answers.append(NoticeClaim.DELIVERED)
                elif (order.notice_lease_until or 0) > now and order.notice_delivery != hold.delivery:
                    answers.append(NoticeClaim.BUSY)
                else:
                    update = {"notice_lease_until": now + lease_seconds, "notice_delivery": hold.delivery}
                    found[hold.key] = order.model_copy(update=update)  # a second hold of it is BUSY
                    taken.append(found[hold.key])
                    answers.append(NoticeClaim.CLAIMED)
            self._write(db, taken)
        return answers

    def finish_notices(self, holds: Sequence[NoticeHold], *, delivered: bool) -> None:
        """All of them in one transaction: all finished, or ``StorageUnavailable`` and none."""
        if not holds:
            return
        update: dict[str, Any] = {"notice_lease_until": None, "notice_delivery": None}
        if delivered:
            update |= {"notice_due_at": None, "notice_redeliveries": None}
        with self._transaction() as db:
            found = self._read(db, list(dict.fromkeys(hold.key for hold in holds)))
            finished = {
                hold.key: found[hold.key].model_copy(update=update)
                for hold in holds
                if hold.key in found
                and found[hold.key].owes_notice(hold.run_id)
                and found[hold.key].notice_delivery == hold.delivery
            }
            self._write(db, list(finished.values()))

    def overdue_notices(self, now: int, limit: int) -> list[Order]:
        return self._select(_OVERDUE_SQL, {"now": now, "limit": limit})

    def postpone_notice(self, key: str, run_id: str, due_at: int) -> None:
        with self._transaction() as db:
            order = self._read_one(db, key)
            if order is not None and order.owes_notice(run_id):
                count = (order.notice_redeliveries or 0) + 1
                self._write(
                    db, [order.model_copy(update={"notice_due_at": due_at, "notice_redeliveries": count})]
                )

    def purge_expired(self, now: int) -> int:
        """Delete the orders whose purge time has come (``Order.purge_at``), as DynamoDB's TTL
        sweep does; returns how many. An order that still matters to the pipeline (decided and not
        settled, or rejected) is kept :data:`~energy_auction.orders.RETENTION_SECONDS` past its
        expiry."""
        with self._transaction() as db:
            purged = db.execute("DELETE FROM orders WHERE purge_at <= ?", (now,)).rowcount
            for (run_id,) in db.execute("SELECT run_id FROM runs WHERE purge_at <= ?", (now,)).fetchall():
                db.execute("DELETE FROM run_batches WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM runs WHERE purge_at <= ?", (now,))
            return purged

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _reason(err: BaseException) -> str:
    """What went wrong, in one line: SQLite's message or the OS error's text (never a traceback)."""
    if isinstance(err, NotADirectoryError | FileExistsError) and err.filename:
        # a folder was wanted where a file is: name that file, not the one being opened
        wanted = Path(err.filename)
        in_the_way = next((p for p in (wanted, *wanted.parents) if p.exists() and not p.is_dir()), None)
        if in_the_way is not None:
            return f"{in_the_way} is a file, not a folder"
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror} ({err.filename})" if err.filename else err.strerror
    return " ".join(str(err).split()) or type(err).__name__


class FolderResultStore:
    """Accepted results as files under a folder, at the same keys as in the S3 results bucket."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._resolved: Path | None = None

    def put_result(self, key: str, document: dict[str, Any]) -> str:
        if self._resolved is None:
            self._resolved = self._root.resolve()
        # Checked on the path as written (the folder is the user's own: no link in it is planted).
        target = Path(os.path.normpath(self._resolved / key))
        if not target.is_relative_to(self._resolved) or target == self._resolved:
            raise ValueError(f"result key {key!r} leaves the results folder")
        # Write then rename: a reader never sees half a file, and a retry rewrites the same bytes.
        data = memoryview(codec.dumps(document).encode())
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            descriptor = _private_file(temporary, flags)
        except FileNotFoundError:  # the first result of its folder
            make_private_folder(target.parent)
            descriptor = _private_file(temporary, flags)
        try:
            try:
                while data:  # a regular file takes it in one write; a short write is carried on
                    data = data[os.write(descriptor, data) :]
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temporary, target)
        except BaseException:
            with suppress(OSError):  # a full disk leaves no half-written file behind
                temporary.unlink(missing_ok=True)
            raise
        return str(target)


class JsonlNotifier:
    """Appends every notice, one JSON object a line, to a file (the local stack's notifications.jsonl).

    A notice with a ``key`` is written once: a redelivery of it (after a crash, or a retry because
    another channel failed) finds its line and adds nothing. Safe across processes: the check and
    the append happen under an exclusive lock on the file.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._keys: set[str] = set()
        self._read_up_to = 0

    def notify(self, notice: Notice) -> None:
        make_private_folder(self._path.parent)
        line = codec.dumps(notice.as_dict()) + "\n"
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
        with self._lock, os.fdopen(_private_file(self._path, flags), "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
            ended = self._catch_up(handle)
            if notice.key is not None and notice.key in self._keys:
                return
            # Under the lock no writer is mid-line: a line without its end is a dead process's.
            handle.write(line.encode() if ended else b"\n" + line.encode())
            handle.flush()
            os.fsync(handle.fileno())
            self._read_up_to = handle.tell()
            if notice.key is not None:
                self._keys.add(notice.key)

    def _catch_up(self, handle: Any) -> bool:
        """Learn the keys of the lines written since this notifier last looked (by any process);
        returns whether the file ends with a whole line."""
        end = handle.seek(0, os.SEEK_END)
        if end < self._read_up_to:  # truncated or replaced: read it again
            self._keys, self._read_up_to = set(), 0
        handle.seek(self._read_up_to)
        for raw in handle:
            if not raw.endswith(b"\n"):
                return False  # left unread: it is ended (and skipped) by the next append
            self._read_up_to += len(raw)
            try:
                key = codec.loads(raw).get("key")
            except (ValueError, AttributeError):
                continue
            if isinstance(key, str):
                self._keys.add(key)
        return True


@dataclass(frozen=True)
class TopicMessage:
    """A message of the local topic, waiting for (another attempt at) delivery to the notifier."""

    message_id: str
    subject: str | None
    message: str
    kind: str | None
    published_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None


_TOPIC_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    message_id      TEXT PRIMARY KEY,
    subject         TEXT,
    message         TEXT NOT NULL,
    kind            TEXT,
    published_at    REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_until     REAL,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_due ON messages (next_attempt_at);
"""
_TOPIC_COLUMNS = "message_id, subject, message, kind, published_at, attempts, next_attempt_at, last_error"


class LocalTopic:
    """The local stand-in for the notification topic and its delivery to the notifier Lambda.

    What SNS and Lambda's asynchronous invocation do on AWS, in a SQLite file: a published message
    is on disk when :meth:`publish` returns; a delivery takes it with a lease (so a process that
    dies mid-delivery gives it back when the lease lapses), and it is removed only once delivered.
    A failed delivery is retried later, for as long as it takes; :meth:`undelivered` shows what
    waits, like the notifier's dead-letter queue and its alarm on AWS.

    Raises
    ------
    LocalStoreError
        The file or its folder cannot be used (on open).
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._db = _connect(path, "notice queue", busy_timeout)
        try:
            self._db.executescript(_TOPIC_SCHEMA)
        except sqlite3.Error as err:
            self._db.close()
            raise LocalStoreError(f"cannot use the notice queue {path}: {_reason(err)}") from None

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return _write_transaction(self._db, self._lock, self.path, "notice queue")

    def publish(self, subject: str | None, message: str, kind: str | None) -> None:
        """Queue a message for the notifier, durably (it is on disk when this returns)."""
        message_id = str(uuid.uuid4())
        now = self._clock()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO messages (message_id, subject, message, kind, published_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (message_id, subject, message, kind, now, now),
            )

    def take(self, lease_seconds: float, limit: int = 1) -> list[TopicMessage]:
        """Up to ``limit`` messages due, the longest due first, held for this delivery for
        ``lease_seconds`` (one transaction); empty when none is due."""
        now = self._clock()
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {_TOPIC_COLUMNS} FROM messages WHERE next_attempt_at <= :now"  # noqa: S608
                " AND (lease_until IS NULL OR lease_until <= :now) ORDER BY next_attempt_at LIMIT :limit",
                {"now": now, "limit": limit},
            ).fetchall()
            db.executemany(
                "UPDATE messages SET lease_until = ? WHERE message_id = ?",
                [(now + lease_seconds, row[0]) for row in rows],
            )
        return [TopicMessage(*row) for row in rows]

    def delivered(self, message_ids: Sequence[str]) -> None:
        """Remove the messages ``message_ids`` (delivered) in one transaction."""
        if isinstance(message_ids, str):
            raise TypeError("delivered takes a sequence of message ids, not one id")
        rows = [(message_id,) for message_id in message_ids]
        if rows:
            with self._transaction() as db:
                db.executemany("DELETE FROM messages WHERE message_id = ?", rows)

    def failed(self, message_id: str, error: str, retry_in: float) -> None:
        """Record a failed attempt; the message is due again ``retry_in`` seconds from now."""
        with self._transaction() as db:
            db.execute(
                "UPDATE messages SET attempts = attempts + 1, next_attempt_at = ?, lease_until = NULL,"
                " last_error = ? WHERE message_id = ?",
                (self._clock() + retry_in, error, message_id),
            )

    def undelivered(self) -> list[TopicMessage]:
        """Every message not delivered yet, oldest first."""
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {_TOPIC_COLUMNS} FROM messages ORDER BY published_at, message_id"  # noqa: S608
            ).fetchall()
        return [TopicMessage(*row) for row in rows]

    def next_due(self) -> float | None:
        """When the next message is due (a clock reading), or None when nothing waits."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0))) FROM messages"
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def load_or_create_secret(
    path: Path, created: Callable[[Path], None] | None = None, what: str = "JWT secret file"
) -> str:
    """A local secret (the JWT signing secret, the cursor key): the text of ``path``, created on
    first use (mode 0600, 48 random bytes); ``what`` names it in errors.

    ``created`` is called with ``path`` when this call made the file.

    Raises
    ------
    LocalStoreError
        The file or its folder cannot be used (the home is a file or read-only, the secret is a
        folder, empty or not UTF-8 text); the message names the file and says why.
    """
    try:
        return _read_secret(path, what)
    except FileNotFoundError:
        pass
    try:
        made = _create_secret(path)
    except OSError as err:
        raise LocalStoreError(f"cannot use the {what} {path}: {_reason(err)}") from None
    if made and created is not None:
        created(path)
    return _read_secret(path, what)


def _create_secret(path: Path) -> bool:
    """Write a new secret to ``path``; False when another process wrote one first."""
    make_private_folder(path.parent)
    # Write a private temporary file, then link it into place: readers never see a partial secret,
    # and when two processes race, the first link wins and both read its value.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = _private_file(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)
    return True


def _read_secret(path: Path, what: str) -> str:
    """The secret in ``path``; ``FileNotFoundError`` when there is none yet."""
    refused = f"cannot use the {what} {path}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise LocalStoreError(f"{refused}: {_reason(err)}") from None
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise LocalStoreError(f"{refused}: it is not UTF-8 text") from None
    if not value:
        # Never replaced silently: delete it, and the next use makes a new one.
        raise LocalStoreError(f"{refused}: it is empty; delete it to have a new secret made") from None
    return value
