"""Chat UI pieces that need no browser: sign-in helpers, profile access, the demo page, error texts."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from chainlit.user import User

from rag_bot.config import Settings
from rag_bot.errors import ConfigError, DatabaseUnavailable, LLMUnavailable
from rag_bot.ui.auth import allowed_profiles, ensure_auth_secret, guest_user, header_user, password_user
from rag_bot.ui.render import render_error, result_frame
from rag_bot.ui.support_demo import DEMO_PAGE, render_demo_page
from rag_bot.ui.users import UserAccount, hash_password, save_user

PROFILES = ["analyst", "support"]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # ensure_auth_secret exports Chainlit's secret into os.environ: start without one and restore
    # the environment afterwards (setenv records the original state, delenv then removes it).
    for name in ("CHAINLIT_AUTH_SECRET", "RAG_BOT_AUTH_SECRET"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    users = tmp_path / "users.yaml"
    save_user(users, UserAccount(username="olga", name="Ольга", password_hash=hash_password("correct horse"),
                                 profiles=["support"], language="en"))
    return Settings(state_dir=tmp_path / "state", users_file=users)


def test_password_sign_in_carries_profiles_and_language(settings: Settings) -> None:
    user = password_user(settings, "olga", "correct horse")
    assert user is not None and user.identifier == "olga" and user.display_name == "Ольга"
    assert user.metadata == {"profiles": ["support"], "language": "en", "provider": "password"}
    assert password_user(settings, "olga", "wrong") is None
    assert password_user(settings, "nobody", "correct horse") is None


def test_header_sign_in_uses_the_users_file_and_refuses_others(settings: Settings) -> None:
    known = header_user(settings, {"X-Forwarded-User": "olga"})
    assert known is not None and known.metadata["profiles"] == ["support"]
    # Unlisted: no profile at all (it was the analyst default), unless the operator names one.
    assert header_user(settings, {"X-Forwarded-User": "petr@technosnab.ru"}) is None
    admitted = settings.model_copy(update={"auth_header_default_profile": "support"})
    other = header_user(admitted, {"X-Forwarded-User": "petr@technosnab.ru"})
    assert other is not None and other.metadata["profiles"] == ["support"]
    assert header_user(settings, {}) is None
    assert header_user(admitted, {"X-Forwarded-User": "bad name; drop"}) is None


def test_users_see_only_their_profiles_and_everyone_all_without_sign_in() -> None:
    assert allowed_profiles(None, PROFILES) == PROFILES
    assert allowed_profiles(User(identifier="a", metadata={"profiles": []}), PROFILES) == PROFILES
    assert allowed_profiles(User(identifier="s", metadata={"profiles": ["support", "gone"]}), PROFILES) == ["support"]
    assert allowed_profiles(guest_user("support"), PROFILES) == ["support"]


def test_auth_secret_is_generated_once_and_reused(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_auth_secret(settings)
    first = os.environ["CHAINLIT_AUTH_SECRET"]
    secret_file = settings.state_dir / "chainlit_auth_secret"
    assert len(first) >= 32 and oct(secret_file.stat().st_mode & 0o777) == "0o600"
    monkeypatch.delenv("CHAINLIT_AUTH_SECRET")
    ensure_auth_secret(settings)
    assert os.environ["CHAINLIT_AUTH_SECRET"] == first


def test_configured_auth_secret_wins(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINLIT_AUTH_SECRET", "from-the-environment-0123456789abcdef")
    ensure_auth_secret(Settings(state_dir=settings.state_dir))
    assert os.environ["CHAINLIT_AUTH_SECRET"] == "from-the-environment-0123456789abcdef"
    assert not (settings.state_dir / "chainlit_auth_secret").exists()


def test_demo_page_embeds_the_widget_with_escaped_values() -> None:
    page = render_demo_page(DEMO_PAGE.read_text(encoding="utf-8"), 'http://x"</script><b>', "tok.en")
    assert '<script src="http://x&quot;&lt;/script&gt;&lt;b&gt;/copilot/index.js"></script>' in page
    assert 'server: "http://x\\"\\u003c/script>\\u003cb>"' in page and 'accessToken: "tok.en"' in page
    assert "window.mountChainlitWidget({" in page and "chainlitServer: window.RAG_BOT_CHAT.server" in page
    assert "__" not in page.split("RAG_BOT_CHAT =")[1].split("</script>")[0]
    assert "accessToken: null" in render_demo_page(DEMO_PAGE.read_text(encoding="utf-8"), "http://h", None)


@pytest.mark.parametrize(("error", "expected"), [
    (LLMUnavailable("The LLM at http://10.0.0.5:8001/v1 is not answering. Start it with: rag-bot llm serve"),
     "Языковая модель сейчас недоступна"),
    (DatabaseUnavailable("PostgreSQL is not reachable (postgresql://u:***@db/x): FATAL password"),
     "База знаний сейчас недоступна"),
    (ConfigError("/etc/rag_bot/profiles.yaml: profiles.x: unknown key"), "Что-то пошло не так"),
    (psycopg.errors.UndefinedTable('relation "orders" does not exist'), "Что-то пошло не так"),
    (KeyError("Traceback"), "Что-то пошло не так"),
])
def test_chat_errors_are_friendly_and_never_show_the_error_text(error: Exception, expected: str) -> None:
    text = render_error(error, "ru")
    assert text.startswith(expected)
    assert str(error) not in text and "http" not in text and "Traceback" not in text


def test_chat_errors_follow_the_users_language() -> None:
    assert render_error(LLMUnavailable("x"), "en").startswith("The language model is not available")
    assert render_error(RuntimeError("boom"), "en").startswith("Something went wrong on our side")


def test_result_table_shows_dates_as_people_write_them() -> None:
    import json
    from datetime import date, datetime
    from decimal import Decimal

    frame = result_frame(
        ["month", "at", "day", "revenue"],
        [(datetime(2024, 1, 1), datetime(2024, 3, 5, 14, 30), date(2024, 2, 29), Decimal("1234.50"))],
    )
    # Serialised the way Chainlit's Dataframe element sends it to the browser.
    sent = json.loads(frame.to_json(orient="split", date_format="iso"))
    assert sent["data"] == [["2024-01-01", "2024-03-05 14:30", "2024-02-29", "1234.50"]]


def test_result_table_groups_digits_in_the_users_language() -> None:
    from decimal import Decimal

    frame = result_frame(["year", "region", "revenue", "orders"],
                         [(2024, "Урал", Decimal("382558448.90"), 18250)], language="ru")
    assert frame.values.tolist() == [["2024", "Урал", "382\u00a0558\u00a0448,90", "18\u00a0250"]]
    frame = result_frame(["revenue"], [(Decimal("382558448.90"),)], language="en")
    assert frame.values.tolist() == [["382,558,448.90"]]
