"""The local stack's JWT secret: a private file, created once, and the Container's choice of source."""

from __future__ import annotations

import base64
import re
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from energy_auction.adapters.local import LocalStoreError, load_or_create_secret
from energy_auction.bootstrap import Container
from energy_auction.settings import Backend, Settings

URLSAFE = re.compile(r"[A-Za-z0-9_-]+")


def test_first_use_creates_a_private_random_secret(tmp_path: Path) -> None:
    # Given a home folder that does not exist yet
    path = tmp_path / "home" / "jwt-secret"

    # When the secret is first needed
    secret = load_or_create_secret(path)

    # Then it is written to a file only its owner can read or write
    assert path.read_text().strip() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # And it carries at least 32 random bytes (43 URL-safe base64 characters)
    assert URLSAFE.fullmatch(secret)
    assert len(secret) >= 43
    assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) >= 32
    # And no temporary file is left beside it
    assert [p.name for p in path.parent.iterdir()] == ["jwt-secret"]


def test_later_uses_return_the_same_secret(tmp_path: Path) -> None:
    path = tmp_path / "jwt-secret"
    first = load_or_create_secret(path)

    assert load_or_create_secret(path) == first
    assert load_or_create_secret(path) == first


def test_two_homes_get_different_secrets(tmp_path: Path) -> None:
    one = load_or_create_secret(tmp_path / "one" / "jwt-secret")
    two = load_or_create_secret(tmp_path / "two" / "jwt-secret")

    assert one != two


def test_an_existing_secret_file_is_used_as_is(tmp_path: Path) -> None:
    # Given a secret the user put there, with a trailing newline from their editor
    path = tmp_path / "jwt-secret"
    path.write_text("  my-own-secret-value\n")

    # When the secret is needed, it is that value (stripped), and the file is left alone
    assert load_or_create_secret(path) == "my-own-secret-value"
    assert path.read_text() == "  my-own-secret-value\n"


@pytest.mark.parametrize("content", [b"", b"  \n"], ids=["empty", "whitespace"])
def test_an_empty_secret_file_is_refused_not_replaced(tmp_path: Path, content: bytes) -> None:
    # Given a secret file with nothing in it
    path = tmp_path / "jwt-secret"
    path.write_bytes(content)

    # When the secret is needed, it is an error naming the file (tokens signed with "" would be
    # forgeable) that says how to get a new one
    with pytest.raises(LocalStoreError) as refused:
        load_or_create_secret(path)
    assert str(refused.value) == (
        f"cannot use the JWT secret file {path}: it is empty; delete it to have a new secret made"
    )

    # And the file is not silently replaced by a new secret
    assert path.read_bytes() == content


def test_a_secret_file_that_is_not_text_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "jwt-secret"
    path.write_bytes(b"\xff\xfe\x00binary")

    with pytest.raises(LocalStoreError) as refused:
        load_or_create_secret(path)

    assert str(refused.value) == f"cannot use the JWT secret file {path}: it is not UTF-8 text"
    assert path.read_bytes() == b"\xff\xfe\x00binary"


def test_a_secret_path_that_is_a_folder_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "jwt-secret"
    path.mkdir()

    with pytest.raises(LocalStoreError, match=rf"^cannot use the JWT secret file {path}: Is a directory"):
        load_or_create_secret(path)


def test_a_home_that_is_a_file_is_refused_in_one_line_naming_the_secret_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("a file, not a folder")

    with pytest.raises(LocalStoreError) as refused:
        load_or_create_secret(home / "jwt-secret")

    assert (
        str(refused.value)
        == f"cannot use the JWT secret file {home}/jwt-secret: {home} is a file, not a folder"
    )
    assert "\n" not in str(refused.value)
    assert home.read_text() == "a file, not a folder"


def test_concurrent_first_uses_all_get_the_one_secret(tmp_path: Path) -> None:
    # Several rounds: each is a fresh home where eight request threads need the secret at once.
    for round_number in range(10):
        # Given no secret yet
        path = tmp_path / f"home-{round_number}" / "jwt-secret"
        start = threading.Barrier(8)

        def first_use(path: Path = path, start: threading.Barrier = start) -> str:
            start.wait()
            return load_or_create_secret(path)

        # When eight threads ask for it at the same moment
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(first_use) for _ in range(8)]
            results = [future.result() for future in futures]  # re-raises any thread's error

        # Then they all got the same secret, the one in the file, and no temporary file remains
        assert len(set(results)) == 1, f"round {round_number}: {len(set(results))} different secrets"
        assert results[0] == path.read_text().strip()
        assert [p.name for p in path.parent.iterdir()] == ["jwt-secret"]


# --- the Container's secret source --------------------------------------------------------------


def test_local_container_uses_the_secret_file_of_its_home(tmp_path: Path) -> None:
    # Given a local container on a fresh home
    container = Container(Settings(backend=Backend.LOCAL, home=tmp_path / "home"))

    # When the signing secret is needed
    secret = container.jwt_secret()

    # Then it is the content of home/jwt-secret, the file the CLI's mint-token also reads
    secret_file = tmp_path / "home" / "jwt-secret"
    assert secret == secret_file.read_text().strip()
    assert Container(Settings(backend=Backend.LOCAL, home=tmp_path / "home")).jwt_secret() == secret


def test_a_configured_secret_overrides_the_file(tmp_path: Path) -> None:
    # Given a local container with the secret set in its settings
    settings = Settings(backend=Backend.LOCAL, home=tmp_path / "home", jwt_secret="configured-secret")

    # When the signing secret is needed, the configured one wins
    assert Container(settings).jwt_secret() == "configured-secret"

    # And no secret file is created
    assert not (tmp_path / "home" / "jwt-secret").exists()


def test_the_secret_override_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENERGY_AUCTION_BACKEND", "local")
    monkeypatch.setenv("ENERGY_AUCTION_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ENERGY_AUCTION_JWT_SECRET", "from-the-environment")

    assert Container(Settings.from_env()).jwt_secret() == "from-the-environment"
    assert not (tmp_path / "home" / "jwt-secret").exists()
