"""API keys (only hashes on disk) and the per-key rate limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_bot.api.keys import add_key, hash_key, load_keys
from rag_bot.api.ratelimit import RateLimiter
from rag_bot.errors import ConfigError


def test_created_key_is_found_by_its_hash_and_never_stored(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    key = add_key(path, "helpdesk", "support", rate_per_minute=30)
    other = add_key(path, "backoffice", "analyst")
    assert key not in path.read_text() and hash_key(key) in path.read_text()
    assert path.stat().st_mode & 0o077 == 0
    ring = load_keys(path, {"support", "analyst"})
    found = ring.find(key)
    assert found is not None and (found.id, found.profile, found.rate_per_minute) == ("helpdesk", "support", 30)
    assert ring.find(other).id == "backoffice"  # type: ignore[union-attr]
    assert ring.find(key + "x") is None and ring.find("") is None
    with pytest.raises(ConfigError, match="already an API key 'helpdesk'"):
        add_key(path, "helpdesk", "support")


def test_keys_file_errors_name_the_problem(tmp_path: Path) -> None:
    assert len(load_keys(tmp_path / "missing.yaml")) == 0
    path = tmp_path / "keys.yaml"
    path.write_text(f"keys:\n  - id: a\n    sha256: {hash_key('k')}\n    profile: nope\n")
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        load_keys(path, {"support"})
    path.write_text("keys:\n  - id: a\n    sha256: not-a-hash\n    profile: support\n    colour: red\n")
    with pytest.raises(ConfigError, match=r"keys\.0\.sha256.*keys\.0\.colour"):
        load_keys(path)


def test_rate_limiter_allows_the_rate_then_says_when_to_retry() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.check("a", 3) for _ in range(3)] == [0, 0, 0]
    assert limiter.check("a", 3) == 20  # 3 per minute: one more after 20 s
    assert limiter.check("b", 3) == 0  # buckets are per key
    now[0] = 19.0
    assert limiter.check("a", 3) == 1
    now[0] = 20.0
    assert limiter.check("a", 3) == 0
