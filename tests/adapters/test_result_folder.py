"""The local results bucket: a folder of JSON files at the S3 keys, each written whole."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from energy_auction.adapters.local import FolderResultStore


def test_a_result_is_written_at_its_key_below_folders_made_for_it(tmp_path: Path) -> None:
    store = FolderResultStore(tmp_path / "results")

    location = store.put_result("orders/2027-01-15/t/o1.json", {"record_id": "o1"})
    again = store.put_result("orders/2027-01-15/t/o2.json", {"record_id": "o2"})

    assert Path(location) == tmp_path / "results" / "orders" / "2027-01-15" / "t" / "o1.json"
    assert json.loads(Path(location).read_text()) == {"record_id": "o1"}
    assert json.loads(Path(again).read_text()) == {"record_id": "o2"}
    # Nothing but the results: no temporary file is left behind.
    assert sorted(p.name for p in Path(location).parent.iterdir()) == ["o1.json", "o2.json"]


def test_a_retry_replaces_the_object_whole(tmp_path: Path) -> None:
    store = FolderResultStore(tmp_path / "results")
    store.put_result("orders/d/o1.json", {"record_id": "o1", "attempt": 1})

    location = store.put_result("orders/d/o1.json", {"record_id": "o1", "attempt": 2})

    assert json.loads(Path(location).read_text()) == {"record_id": "o1", "attempt": 2}


def test_a_folder_removed_under_a_running_store_is_made_again(tmp_path: Path) -> None:
    store = FolderResultStore(tmp_path / "results")
    first = Path(store.put_result("orders/d/o1.json", {"record_id": "o1"}))
    first.unlink()
    first.parent.rmdir()

    assert json.loads(Path(store.put_result("orders/d/o2.json", {"n": 2})).read_text()) == {"n": 2}


@pytest.mark.parametrize("key", ["../outside.json", "orders/../../outside.json", "/etc/abs.json", "."])
def test_a_key_that_leaves_the_folder_is_refused_and_writes_nothing(tmp_path: Path, key: str) -> None:
    store = FolderResultStore(tmp_path / "results")

    with pytest.raises(ValueError, match="leaves the results folder"):
        store.put_result(key, {"record_id": "x"})

    assert not (tmp_path / "outside.json").exists()
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_a_write_that_fails_leaves_the_previous_result_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FolderResultStore(tmp_path / "results")
    location = Path(store.put_result("orders/d/o1.json", {"record_id": "o1", "attempt": 1}))

    def full_disk(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        store.put_result("orders/d/o1.json", {"record_id": "o1", "attempt": 2})

    assert json.loads(location.read_text()) == {"record_id": "o1", "attempt": 1}
    assert [p.name for p in location.parent.iterdir()] == ["o1.json"]


def test_a_document_that_does_not_encode_is_refused_before_any_file_is_made(tmp_path: Path) -> None:
    store = FolderResultStore(tmp_path / "results")

    with pytest.raises(TypeError):
        store.put_result("orders/d/o1.json", {"record_id": "o1", "attempt": object()})

    assert not (tmp_path / "results").exists()
