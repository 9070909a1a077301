"""Who may name the signed-in user (header auth), who may read /metrics and the docs, and the demo's
public passwords on a reachable address.

The guards run around a small real ASGI app that echoes the headers it received; header sign-in and the
demo check run on real users files. The shipped nginx config is tested in tests/test_nginx_headers.py.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from rag_bot.config import PROJECT_ROOT, Settings
from rag_bot.errors import ConfigError
from rag_bot.serving import OPS_PATHS, check_startup_safety, create_server_app, guard_app
from rag_bot.serving.guards import OpsTokenGuard, ProxyHeaderGuard, parse_networks
from rag_bot.ui.auth import header_user
from rag_bot.ui.users import UserAccount, hash_password, save_user

DEMO_USERS = PROJECT_ROOT / "knowledge_base" / "users.yaml"


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.headers.get("x-forwarded-user"),
                         "secret": request.headers.get("x-proxy-secret")})


ECHO = Starlette(routes=[Route("/{path:path}", _echo)])


def _client(app: object, address: str) -> TestClient:
    return TestClient(app, client=(address, 40000))  # type: ignore[arg-type]


def test_header_from_an_untrusted_address_is_dropped() -> None:
    guard = ProxyHeaderGuard(ECHO, user_header="X-Forwarded-User", trusted=["10.0.0.0/8"])
    spoofed = _client(guard, "203.0.113.7").get("/auth/header", headers={"X-Forwarded-User": "analyst"})
    assert spoofed.json()["user"] is None
    proxied = _client(guard, "10.1.2.3").get("/auth/header", headers={"X-Forwarded-User": "analyst"})
    assert proxied.json()["user"] == "analyst"


def test_header_with_a_proxy_secret_needs_the_secret_from_any_address() -> None:
    guard = ProxyHeaderGuard(ECHO, user_header="X-Forwarded-User", trusted=["127.0.0.1/32"],
                             secret="s3cret-proxy", secret_header="X-Proxy-Secret")
    # With a secret configured, even the trusted address must send it.
    no_secret = _client(guard, "127.0.0.1").get("/", headers={"X-Forwarded-User": "analyst"})
    assert no_secret.json()["user"] is None
    wrong = _client(guard, "127.0.0.1").get("/", headers={"X-Forwarded-User": "analyst", "X-Proxy-Secret": "guess"})
    assert wrong.json() == {"user": None, "secret": None}
    right = _client(guard, "198.51.100.4").get("/", headers={"X-Forwarded-User": "analyst",
                                                              "X-Proxy-Secret": "s3cret-proxy"})
    assert right.json()["user"] == "analyst"


def test_a_typo_in_trusted_proxies_names_the_setting() -> None:
    with pytest.raises(ValueError, match="RAG_BOT_AUTH_TRUSTED_PROXIES"):
        parse_networks(["10.0.0.0/33"])


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.yaml"
    save_user(path, UserAccount(username="olga", password_hash="", profiles=["analyst"]))
    return path


def test_header_user_not_in_the_users_file_gets_no_profile(users_file: Path) -> None:
    settings = Settings(ui_auth="header", users_file=users_file)
    assert header_user(settings, {"X-Forwarded-User": "mallory"}) is None
    listed = header_user(settings, {"X-Forwarded-User": "olga"})
    assert listed is not None and listed.metadata["profiles"] == ["analyst"]


def test_header_user_default_profile_only_when_the_operator_sets_one(users_file: Path) -> None:
    settings = Settings(ui_auth="header", users_file=users_file, auth_header_default_profile="support")
    user = header_user(settings, {"X-Forwarded-User": "new.colleague"})
    assert user is not None and user.metadata["profiles"] == ["support"]


def test_header_user_checks_the_proxy_secret_itself(users_file: Path) -> None:
    settings = Settings(ui_auth="header", users_file=users_file, auth_proxy_secret="s3cret-proxy")
    assert header_user(settings, {"X-Forwarded-User": "olga"}) is None
    assert header_user(settings, {"X-Forwarded-User": "olga", "X-Proxy-Secret": "s3cret-proxy"}) is not None


def test_demo_passwords_are_refused_on_a_reachable_address() -> None:
    settings = Settings(ui_auth="password", users_file=DEMO_USERS, ui_host="0.0.0.0")
    with pytest.raises(ConfigError, match="RAG_BOT_USERS_FILE") as refused:
        check_startup_safety(settings)
    assert "analyst" in str(refused.value) and "RAG_BOT_DEMO=true" in str(refused.value)


def test_a_copy_of_the_demo_users_file_is_refused_too(tmp_path: Path) -> None:
    copy = tmp_path / "users.yaml"
    copy.write_bytes(DEMO_USERS.read_bytes())
    with pytest.raises(ConfigError):
        check_startup_safety(Settings(ui_auth="password", users_file=copy, ui_host="10.0.0.5"))


def test_demo_passwords_are_fine_on_loopback_or_when_declared_a_demo(tmp_path: Path) -> None:
    check_startup_safety(Settings(ui_auth="password", users_file=DEMO_USERS, ui_host="127.0.0.1"))
    check_startup_safety(Settings(ui_auth="password", users_file=DEMO_USERS, ui_host="0.0.0.0", demo=True))
    own = tmp_path / "users.yaml"
    save_user(own, UserAccount(username="analyst", password_hash=hash_password("a-real-password")))
    check_startup_safety(Settings(ui_auth="password", users_file=own, ui_host="0.0.0.0"))


def test_ops_token_closes_metrics_and_api_docs(tmp_path: Path) -> None:
    settings = Settings(ops_token="ops-token-123", state_dir=tmp_path, api_keys_file=tmp_path / "keys.yaml")
    app = guard_app(create_server_app(settings, chat=False), settings)
    client = TestClient(app)  # type: ignore[arg-type]
    for path in ("/metrics", "/api/v1/docs", "/api/v1/openapi.json"):
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert "RAG_BOT_OPS_TOKEN" in refused.json()["message"]
        assert refused.headers["www-authenticate"].startswith("Basic")
    assert client.get("/metrics", headers={"Authorization": "Bearer ops-token-123"}).status_code == 200
    basic = base64.b64encode(b"ops:ops-token-123").decode()
    assert client.get("/api/v1/openapi.json", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/healthz").status_code == 200  # probes stay open


def test_without_an_ops_token_metrics_stay_open(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, api_keys_file=tmp_path / "keys.yaml")
    client = TestClient(guard_app(create_server_app(settings, chat=False), settings))  # type: ignore[arg-type]
    assert client.get("/metrics").status_code == 200


def test_ops_guard_matches_only_its_paths() -> None:
    guard = OpsTokenGuard(ECHO, token="t", paths=OPS_PATHS)
    assert guard.guarded("/api/v1/docs") and guard.guarded("/api/v1/docs/oauth2-redirect")
    assert not guard.guarded("/api/v1/ask") and not guard.guarded("/metricsx")
