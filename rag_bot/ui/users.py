"""Chat users: a YAML file of accounts with salted PBKDF2 password hashes, and `rag-bot users`.

The file (`RAG_BOT_USERS_FILE`) is a list under `users:`:

    users:
      - username: anna
        name: Анна Петрова           # shown in the chat
        password_hash: pbkdf2_sha256$600000$<salt>$<hash>
        profiles: [analyst, support]  # bot profiles this user may open; empty = all
        language: ru                  # ru | en

Hashes are PBKDF2-HMAC-SHA256 from the standard library (OWASP's 2023 work factor, 600,000
iterations), compared in constant time; an unknown user costs the same time as a wrong password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

import click
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rag_bot.errors import ConfigError

logger = logging.getLogger(__name__)

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 600_000
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class UserAccount(BaseModel):
    """One chat user as stored in the users file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str
    name: str = ""
    password_hash: str = Field(default="", repr=False)  # empty: no password sign-in (header sign-in only)
    profiles: list[str] = Field(default_factory=list)
    language: Literal["ru", "en"] = "ru"

    @field_validator("username")
    @classmethod
    def _plain_username(cls, value: str) -> str:
        if not _USERNAME.match(value):
            raise ValueError(f"username {value!r} may contain letters, digits, '.', '_', '@' and '-' only")
        return value

    @property
    def display_name(self) -> str:
        return self.name or self.username


# -- password hashes -------------------------------------------------------------------------------
def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    """A self-describing salted hash: `pbkdf2_sha256$<iterations>$<salt>$<hash>`."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{ALGORITHM}${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches `stored`; a malformed hash never matches."""
    try:
        algorithm, iterations, salt, digest = stored.split("$")
        if algorithm != ALGORITHM:
            return False
        expected = _unb64(digest)
        actual = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A real hash of a random password, checked for unknown users so they cost as long as known ones."""
    return hash_password(secrets.token_hex(16))


# -- the users file --------------------------------------------------------------------------------
def load_users(path: Path) -> dict[str, UserAccount]:
    """Accounts by username; a missing file means no users. Errors name the file and the entry."""
    if not path.exists():
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    entries = raw.get("users") if isinstance(raw, dict) else None
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: `users:` must be a list of accounts.")
    users: dict[str, UserAccount] = {}
    for index, entry in enumerate(entries):
        try:
            account = UserAccount.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{path}: user #{index + 1}: {problems}") from exc
        if account.username in users:
            raise ConfigError(f"{path}: user {account.username!r} is listed twice.")
        users[account.username] = account
    return users


@lru_cache(maxsize=8)
def _cached_users(path: Path, inode: int, mtime_ns: int) -> dict[str, UserAccount]:
    return load_users(path)


def get_users(path: Path) -> dict[str, UserAccount]:
    """The users file, re-read when it changes (a new user can sign in without a restart)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    # save_user replaces the file (new inode), so a rewrite within one mtime tick is still seen.
    return _cached_users(path, stat.st_ino, stat.st_mtime_ns)


def authenticate(users_file: Path, username: str, password: str) -> UserAccount | None:
    """The account when the password is right; None for a wrong password or an unknown user."""
    account = get_users(users_file).get(username.strip())
    if account is None or not account.password_hash:
        verify_password(password, _dummy_hash())  # same cost as a real check
        return None
    return account if verify_password(password, account.password_hash) else None


def save_user(users_file: Path, account: UserAccount) -> bool:
    """Add or replace one account in the file (others and their order kept). True when it was new."""
    users = load_users(users_file)
    created = account.username not in users
    users[account.username] = account
    entries = [u.model_dump(exclude_defaults=False) for u in users.values()]
    users_file.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({"users": entries}, allow_unicode=True, sort_keys=False)
    tmp = users_file.with_name(users_file.name + ".tmp")
    # The file holds password hashes: readable by its owner only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    tmp.replace(users_file)
    return created


# -- the demo's public passwords ------------------------------------------------------------------
DEMO_PASSWORDS = {"analyst": "analyst-demo", "support": "support-demo"}  # printed in the README
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (the demo's default bind)."""
    try:
        return host in _LOOPBACK_HOSTS or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def demo_accounts(users_file: Path) -> list[str]:
    """Usernames in `users_file` whose password is one of the demo's public ones."""
    users = get_users(users_file)
    return [name for name, password in DEMO_PASSWORDS.items()
            if name in users and users[name].password_hash and verify_password(password, users[name].password_hash)]


def refuse_demo_passwords(users_file: Path, *, host: str, demo: bool) -> None:
    """Refuse to serve password sign-in on a reachable address while the demo's public passwords work.

    The demo itself (loopback bind, or RAG_BOT_DEMO=true) is allowed; anything else must use its own users.
    """
    if demo or is_loopback(host):
        return
    found = demo_accounts(users_file)
    if found:
        raise ConfigError(
            f"{users_file} still has the demo's public passwords ({', '.join(found)}), and the chat would listen "
            f"on {host}, reachable from other machines. Point RAG_BOT_USERS_FILE at your own users file "
            "(`rag-bot users add NAME --profile analyst --users-file FILE`), or set RAG_BOT_DEMO=true if this "
            "really is a public demo."
        )


# -- `rag-bot users` -------------------------------------------------------------------------------
@click.group("users")
def users_cli() -> None:
    """Chat users for password sign-in (the file in RAG_BOT_USERS_FILE)."""


@users_cli.command("add")
@click.argument("username")
@click.option("--name", default="", help="Display name shown in the chat.")
@click.option("--profile", "profiles", multiple=True, help="A bot profile the user may open (repeat); none = all.")
@click.option("--language", type=click.Choice(["ru", "en"]), default="ru", show_default=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="Asked interactively when not given.")
@click.option("--users-file", type=click.Path(path_type=Path), default=None,
              help="Defaults to RAG_BOT_USERS_FILE.")
def users_add(username: str, name: str, profiles: tuple[str, ...], language: str, password: str,
              users_file: Path | None) -> None:
    """Create a user, or reset an existing user's password and details."""
    from rag_bot.config import get_settings
    from rag_bot.profiles import get_profiles

    settings = get_settings()
    path = users_file or settings.users_file
    if len(password) < 8:
        raise click.ClickException("Use a password of at least 8 characters.")
    known = set(get_profiles(settings.profiles_file).profiles)
    unknown = [p for p in profiles if p not in known]
    if unknown:
        raise click.ClickException(f"Unknown profile(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}.")
    try:
        account = UserAccount(username=username, name=name, password_hash=hash_password(password),
                              profiles=list(profiles), language=language)  # type: ignore[arg-type]
        created = save_user(path, account)
    except (ValidationError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{'Created' if created else 'Updated'} user {username!r} in {path}.")


@users_cli.command("list")
@click.option("--users-file", type=click.Path(path_type=Path), default=None,
              help="Defaults to RAG_BOT_USERS_FILE.")
def users_list(users_file: Path | None) -> None:
    """Show the users (never their hashes)."""
    from rag_bot.config import get_settings

    path = users_file or get_settings().users_file
    try:
        users = load_users(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if not users:
        click.echo(f"No users in {path}.")
    for account in users.values():
        profiles = ", ".join(account.profiles) or "all profiles"
        click.echo(f"{account.username}\t{account.display_name}\t{account.language}\t{profiles}")
