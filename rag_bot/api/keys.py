"""API keys for support-desk systems, each bound to one bot profile.

The keys file (RAG_BOT_API_KEYS_FILE, default `.state/api_keys.yaml`) holds the sha256 of each key,
never the key itself, so reading the file does not let anyone call the API:

    keys:
      - id: helpdesk            # shown in logs and metrics instead of the key
        sha256: 9f86d08...      # hex sha256 of the key
        profile: support        # the bot profile every request with this key gets
        rate_per_minute: 60     # optional; default RAG_BOT_API_RATE_PER_MINUTE

`rag-bot api-key create helpdesk --profile support` generates a key, appends its hash to the file
and prints the key once. Keys are 256-bit random strings, so a plain sha256 is enough (a slow
password hash protects guessable secrets, which these are not).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag_bot.errors import ConfigError

KEY_PREFIX = "rbk_"


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    profile: str
    rate_per_minute: int | None = Field(default=None, ge=1)


class _KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKey] = Field(default_factory=list)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """A new random key (shown once; only its hash is stored)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyRing:
    """The known keys, looked up by the hash of what a request presents."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._by_hash: dict[str, ApiKey] = {}
        seen: set[str] = set()
        for key in keys:
            if key.id in seen:
                raise ConfigError(f"API key id '{key.id}' appears twice in the keys file; ids must be unique.")
            seen.add(key.id)
            self._by_hash[key.sha256] = key

    def __len__(self) -> int:
        return len(self._by_hash)

    def __iter__(self) -> Iterator[ApiKey]:
        return iter(self._by_hash.values())

    def find(self, presented: str) -> ApiKey | None:
        # Looking up the hash (not the key) keeps timing independent of how much of a key matches.
        return self._by_hash.get(hash_key(presented))


def load_keys(path: Path, known_profiles: set[str] | None = None) -> KeyRing:
    """Read the keys file; a missing file is an empty ring (the API then refuses every request)."""
    if not path.exists():
        return KeyRing([])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        parsed = _KeysFile.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
    if known_profiles is not None:
        for key in parsed.keys:
            if key.profile not in known_profiles:
                raise ConfigError(
                    f"{path}: key '{key.id}' is bound to the unknown profile '{key.profile}'. "
                    f"Known profiles: {', '.join(sorted(known_profiles))}."
                )
    return KeyRing(parsed.keys)


def add_key(path: Path, key_id: str, profile: str, rate_per_minute: int | None = None) -> str:
    """Create a key, append its hash to the keys file (created if needed); returns the key."""
    existing = load_keys(path)
    if any(k.id == key_id for k in existing):
        raise ConfigError(f"There is already an API key '{key_id}' in {path}; pick another id or remove it first.")
    key = generate_key()
    entry = ApiKey(id=key_id, sha256=hash_key(key), profile=profile, rate_per_minute=rate_per_minute)
    entries = [k.model_dump(exclude_none=True) for k in existing] + [entry.model_dump(exclude_none=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(
        "# API keys for rag-bot's HTTP API: sha256 of each key, never the key. "
        "Add one with `rag-bot api-key create`.\n" + yaml.safe_dump({"keys": entries}, sort_keys=False),
        encoding="utf-8",
    )
    tmp.chmod(0o600)
    tmp.replace(path)
    return key
