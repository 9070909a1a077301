"""Password sign-in: the users file, hashes, and `rag-bot users add`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rag_bot.config import PROJECT_ROOT
from rag_bot.errors import ConfigError
from rag_bot.ui.users import UserAccount, authenticate, hash_password, load_users, save_user, users_cli, verify_password


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.yaml"
    save_user(path, UserAccount(username="olga", name="Ольга", password_hash=hash_password("correct horse"),
                                profiles=["analyst"], language="ru"))
    return path


def test_password_check_accepts_the_right_password(users_file: Path) -> None:
    account = authenticate(users_file, "olga", "correct horse")
    assert account is not None and account.display_name == "Ольга" and account.profiles == ["analyst"]


def test_password_check_rejects_a_wrong_password(users_file: Path) -> None:
    assert authenticate(users_file, "olga", "Correct horse") is None


def test_password_check_rejects_an_unknown_user(users_file: Path) -> None:
    assert authenticate(users_file, "mallory", "correct horse") is None


def test_malformed_or_foreign_hashes_never_match() -> None:
    assert not verify_password("x", "")
    assert not verify_password("x", "md5$1$abc$def")
    assert not verify_password("x", "pbkdf2_sha256$notanumber$abc$def")


def test_hashes_are_salted() -> None:
    assert hash_password("same") != hash_password("same")


def test_demo_users_file_signs_in_with_the_documented_passwords() -> None:
    demo = PROJECT_ROOT / "knowledge_base" / "users.yaml"
    assert authenticate(demo, "analyst", "analyst-demo") is not None
    support = authenticate(demo, "support", "support-demo")
    assert support is not None and support.profiles == ["support"]


def test_users_file_errors_name_the_file_and_entry(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("users:\n  - username: bad name\n    password_hash: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"users.yaml: user #1: username"):
        load_users(path)


def test_users_add_command_creates_then_updates_a_user(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    runner = CliRunner()
    args = ["add", "ivan", "--name", "Иван", "--profile", "support", "--language", "en",
            "--password", "first-password", "--users-file", str(path)]
    result = runner.invoke(users_cli, args)
    assert result.exit_code == 0, result.output
    assert "Created user 'ivan'" in result.output
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    args[args.index("first-password")] = "second-password"
    result = runner.invoke(users_cli, args)
    assert result.exit_code == 0 and "Updated user 'ivan'" in result.output
    assert authenticate(path, "ivan", "second-password") is not None
    assert authenticate(path, "ivan", "first-password") is None
    assert "second-password" not in path.read_text(encoding="utf-8")


def test_users_add_refuses_unknown_profiles_and_short_passwords(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    result = CliRunner().invoke(users_cli, ["add", "ivan", "--profile", "nope", "--password", "long-enough",
                                            "--users-file", str(path)])
    assert result.exit_code != 0 and "Unknown profile" in result.output
    result = CliRunner().invoke(users_cli, ["add", "ivan", "--password", "short", "--users-file", str(path)])
    assert result.exit_code != 0 and "at least 8" in result.output
    assert not path.exists()
