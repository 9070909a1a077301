"""The chat as `rag-bot serve` mounts it: CORS only for configured origins (Chainlit allows credentials),
header sign-in only from the trusted proxy and only for listed users.

The chat is mounted in a child process (Chainlit has one global app per process), on the real
`create_server_app`; preflight and simple requests come from an allowed and from a foreign origin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PROBE = """
import json, sys
from starlette.testclient import TestClient
from rag_bot.config import Settings
from rag_bot.serving import create_server_app, guard_app
settings = Settings(cors_origins=json.loads(sys.argv[1]))
client = TestClient(guard_app(create_server_app(settings, chat=True), settings))
seen = {}
for origin in ("https://shop.example", "https://evil.example"):
    pre = client.options("/project/settings", headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
    get = client.get("/auth/config", headers={"Origin": origin})
    seen[origin] = [pre.headers.get("access-control-allow-origin"), get.headers.get("access-control-allow-origin")]
print(json.dumps(seen))
"""


def _allowed(tmp_path: Path, origins: list[str]) -> dict[str, list[str | None]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_BOT_", "CHAINLIT_"))}
    env.update(RAG_BOT_STATE_DIR=str(tmp_path / "state"), RAG_BOT_CHAT_HISTORY="false",
               RAG_BOT_API_KEYS_FILE=str(tmp_path / "keys.yaml"))
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(origins)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_chat_cors_allows_only_configured_origins(tmp_path: Path) -> None:
    seen = _allowed(tmp_path, ["https://shop.example"])
    assert seen["https://shop.example"] == ["https://shop.example", "https://shop.example"]
    assert seen["https://evil.example"] == [None, None]


def test_chat_cors_default_is_same_origin_only(tmp_path: Path) -> None:
    seen = _allowed(tmp_path, [])
    assert seen == {"https://shop.example": [None, None], "https://evil.example": [None, None]}


SIGN_IN = """
import json, sys
from starlette.testclient import TestClient
from rag_bot.config import Settings
from rag_bot.serving import create_server_app, guard_app
settings = Settings()
app = guard_app(create_server_app(settings, chat=True), settings)
seen = {}
for address in ("203.0.113.9", "127.0.0.1"):
    client = TestClient(app, client=(address, 50000))
    for name in ("olga", "mallory"):
        response = client.post("/auth/header", headers={"X-Forwarded-User": name})
        seen[f"{address} {name}"] = response.status_code
print(json.dumps(seen))
"""


def test_header_sign_in_through_the_real_app_trusts_only_the_proxy_and_listed_users(tmp_path: Path) -> None:
    from rag_bot.ui.users import UserAccount, save_user

    users = tmp_path / "users.yaml"
    save_user(users, UserAccount(username="olga", profiles=["support"]))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_BOT_", "CHAINLIT_"))}
    env.update(RAG_BOT_STATE_DIR=str(tmp_path / "state"), RAG_BOT_CHAT_HISTORY="false",
               RAG_BOT_API_KEYS_FILE=str(tmp_path / "keys.yaml"), RAG_BOT_UI_AUTH="header",
               RAG_BOT_USERS_FILE=str(users), RAG_BOT_AUTH_TRUSTED_PROXIES='["127.0.0.1/32"]')
    proc = subprocess.run([sys.executable, "-c", SIGN_IN], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {
        "203.0.113.9 olga": 401,  # a client talking to the bot directly cannot name a user
        "203.0.113.9 mallory": 401,
        "127.0.0.1 olga": 200,  # the proxy can, for users in the users file
        "127.0.0.1 mallory": 401,  # and not for anyone else (was: the analyst profile)
    }
