"""Sign-in for the chat: password (the users file) or a trusted proxy header, and who may open what.

A Chainlit user carries its allowed bot profiles and language in `metadata`; the app offers only
those profiles and enforces them again on every message. Guests of the support widget get a
one-off identity bound to the copilot profile.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import chainlit as cl

from rag_bot.config import Settings
from rag_bot.ui.users import UserAccount, authenticate, get_users

logger = logging.getLogger(__name__)

SECRET_FILE = "chainlit_auth_secret"


def ensure_auth_secret(settings: Settings) -> None:
    """Give Chainlit its token-signing secret (CHAINLIT_AUTH_SECRET) before it checks for one.

    Configured (RAG_BOT_AUTH_SECRET / CHAINLIT_AUTH_SECRET) wins; otherwise one is generated once into
    the state folder (owner-only) and reused, so sessions survive restarts on a fresh machine too.
    """
    if settings.auth_secret is not None:
        os.environ["CHAINLIT_AUTH_SECRET"] = settings.auth_secret.get_secret_value()
        return
    os.environ["CHAINLIT_AUTH_SECRET"] = _stored_secret(settings.state_dir / SECRET_FILE)


def _stored_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once must not write two different secrets.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text(encoding="utf-8").strip()
        if secret:
            return secret
        path.unlink()  # an empty file from an interrupted write
        return _stored_secret(path)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(48))
    logger.info("generated the chat's session secret in %s", path)
    return path.read_text(encoding="utf-8").strip()


def chainlit_user(account: UserAccount, provider: str) -> cl.User:
    return cl.User(
        identifier=account.username,
        display_name=account.display_name,
        metadata={"profiles": list(account.profiles), "language": account.language, "provider": provider},
    )


def password_user(settings: Settings, username: str, password: str) -> cl.User | None:
    account = authenticate(settings.users_file, username, password)
    if account is None:
        logger.info("sign-in refused for %r", username)
        return None
    return chainlit_user(account, "password")


def header_user(settings: Settings, headers: Mapping[str, str]) -> cl.User | None:
    """The proxy's user: only a name listed in the users file, or the operator's default profile.

    The header reaches this point only from a trusted proxy (`rag_bot.serving.guards.ProxyHeaderGuard`
    drops it otherwise); when a proxy secret is configured it is checked here again, so the chat
    mounted without that guard still refuses a client's own header.
    """
    if settings.auth_proxy_secret is not None:
        sent = headers.get(settings.auth_proxy_secret_header) or ""
        if not hmac.compare_digest(sent.encode(), settings.auth_proxy_secret.get_secret_value().encode()):
            logger.warning("header sign-in refused: %s missing or wrong", settings.auth_proxy_secret_header)
            return None
    name = (headers.get(settings.auth_header) or "").strip()
    if not name:
        return None
    account = get_users(settings.users_file).get(name)
    if account is None:
        if not settings.auth_header_default_profile:
            # Unknown names get nothing: a proxy that forwards any name must not hand out the analyst profile.
            logger.warning("header sign-in refused for %r: not in %s (set RAG_BOT_AUTH_HEADER_DEFAULT_PROFILE "
                           "to admit unlisted users)", name, settings.users_file)
            return None
        try:
            account = UserAccount(username=name, profiles=[settings.auth_header_default_profile])
        except ValueError:
            logger.warning("proxy sent an unusable user name in %s", settings.auth_header)
            return None
    return chainlit_user(account, "header")


def guest_user(profile: str, language: str = "ru") -> cl.User:
    """A one-off visitor of the support widget: may open `profile` only."""
    return cl.User(
        identifier=f"guest-{uuid.uuid4().hex[:12]}",
        display_name="Гость" if language == "ru" else "Guest",
        metadata={"profiles": [profile], "language": language, "provider": "guest"},
    )


def allowed_profiles(user: Any, profiles: Iterable[str]) -> list[str]:
    """The profiles (in config order) a user may open; everyone may open all when sign-in is off."""
    names = list(profiles)
    if user is None:
        return names
    listed = (getattr(user, "metadata", None) or {}).get("profiles") or []
    if not listed:
        return names
    return [name for name in names if name in listed]


def user_language(user: Any) -> str | None:
    language = (getattr(user, "metadata", None) or {}).get("language")
    return language if language in ("ru", "en") else None
