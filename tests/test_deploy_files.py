"""The image build and the shipped deployment files keep secrets out and sign-in headers honest."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

from rag_bot.config import Settings


def _dockerignore_patterns() -> list[re.Pattern[str]]:
    """Docker's .dockerignore rules as regexes: `**` any depth, `*` within a name, a match also covers
    everything below it (Docker excludes a matched folder whole)."""
    patterns = []
    for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "no re-includes: they make the rules hard to review"
        body = re.escape(line.strip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        patterns.append(re.compile(f"^{body}(?:/.*)?$"))
    return patterns


@pytest.mark.parametrize("path", [".env", ".env.production", "rag_bot/.env", ".state/chainlit_auth_secret",
                                  ".state/api_keys.yaml", ".state/pg/base/1/1259", ".venv/bin/python",
                                  "rag_bot/__pycache__/cli.cpython-311.pyc", ".git/config", "models/x.gguf"])
def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image(path: str) -> None:
    assert any(p.match(path) for p in _dockerignore_patterns()), f"{path} would be copied into the image"


@pytest.mark.parametrize("path", ["rag_bot/cli.py", "pyproject.toml", "uv.lock", ".chainlit/config.toml",
                                  "knowledge_base/docs/support/delivery.md", "sandbox/worker.py"])
def test_dockerignore_keeps_what_the_app_needs(path: str) -> None:
    assert not any(p.match(path) for p in _dockerignore_patterns()), f"{path} is needed in the image"


def test_an_empty_token_from_compose_means_no_token() -> None:
    settings = Settings(ops_token="", auth_proxy_secret="  ", auth_header_default_profile="")
    assert (settings.ops_token, settings.auth_proxy_secret, settings.auth_header_default_profile) == (None, None, None)
