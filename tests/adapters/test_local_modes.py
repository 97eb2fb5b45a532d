"""Who may read the local stack's files: everything it creates is its owner's alone (folders 0700,
files 0600, like the JWT secret), and what exists already keeps its mode."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from energy_auction.adapters.local import (
    FolderResultStore,
    JsonlNotifier,
    LocalTopic,
    SqliteOrderStore,
    load_or_create_secret,
)
from energy_auction.notifications import Notice, NoticeKind
from tests.adapters.stores import NOW, pending
from tests.builders import key


@pytest.fixture(autouse=True)
def _usual_umask() -> Iterator[None]:
    """The usual 022, which on its own leaves new files readable by everyone."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def use_every_file(home: Path) -> None:
    """What a run of the local stack writes to its home."""
    load_or_create_secret(home / "jwt-secret")
    store = SqliteOrderStore(home / "orders.sqlite3")
    store.put_orders([pending("o1")], now=NOW)
    topic = LocalTopic(home / "notices.sqlite3")
    topic.publish("subject", "message", None)
    FolderResultStore(home / "results").put_result("orders/2027-01-15/o1.json", {"record_id": "o1"})
    JsonlNotifier(home / "notifications.jsonl").notify(Notice(kind=NoticeKind.OTHER, title="t", text="x"))
    # The -wal and -shm files exist while a connection is open: look before closing.
    assert (home / "orders.sqlite3-wal").exists()
    assert (home / "notices.sqlite3-shm").exists()


def test_everything_the_stack_creates_is_its_owners_alone(tmp_path: Path) -> None:
    # Given a home folder that does not exist yet, below a parent that does not either
    home = tmp_path / "new" / "home"

    # When the stack has written each of its files
    use_every_file(home)

    # Then every folder it made is 0700 and every file 0600, the SQLite side files included
    folders = [home.parent, home, *(p for p in home.rglob("*") if p.is_dir())]
    files = [p for p in home.rglob("*") if p.is_file()]
    assert {p.relative_to(home).as_posix() for p in files} >= {
        "jwt-secret",
        "orders.sqlite3",
        "orders.sqlite3-wal",
        "orders.sqlite3-shm",
        "notices.sqlite3",
        "notices.sqlite3-wal",
        "notices.sqlite3-shm",
        "results/orders/2027-01-15/o1.json",
        "notifications.jsonl",
    }
    assert {p.relative_to(tmp_path).as_posix(): mode(p) for p in folders} == {
        p.relative_to(tmp_path).as_posix(): 0o700 for p in folders
    }
    assert {p.relative_to(home).as_posix(): mode(p) for p in files} == {
        p.relative_to(home).as_posix(): 0o600 for p in files
    }
    # And no temporary file is left behind
    assert not list(home.rglob(".*"))


def test_a_folder_and_files_that_exist_keep_their_mode(tmp_path: Path) -> None:
    # Given a home the user made, shared with their group on purpose, and files an earlier
    # version made readable by everyone
    home = tmp_path / "home"
    home.mkdir(mode=0o750)
    (home / "results").mkdir(mode=0o755)
    (home / "notifications.jsonl").write_text("")
    os.chmod(home / "notifications.jsonl", 0o644)
    SqliteOrderStore(home / "orders.sqlite3").close()
    os.chmod(home / "orders.sqlite3", 0o644)

    # When the stack uses them
    use_every_file(home)

    # Then their modes are as they were; what it made beside them is private
    assert (mode(home), mode(home / "results")) == (0o750, 0o755)
    assert (mode(home / "notifications.jsonl"), mode(home / "orders.sqlite3")) == (0o644, 0o644)
    assert mode(home / "results" / "orders") == 0o700
    assert (mode(home / "jwt-secret"), mode(home / "notices.sqlite3")) == (0o600, 0o600)


def test_a_database_made_by_two_processes_at_once_is_one_database(tmp_path: Path) -> None:
    # Given two stores opening a database that does not exist yet, one after the other before
    # either has written (the second finds the file the first made)
    path = tmp_path / "orders.sqlite3"
    first = SqliteOrderStore(path)
    second = SqliteOrderStore(path)

    # Then both use the one file
    first.put_orders([pending("o1")], now=NOW)
    assert second.get_order(key("o1")) is not None
