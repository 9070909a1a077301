"""Profiles in YAML, whole: knowledge + instructions + greeting + starters + model, validated on load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from rag_bot import prompts
from rag_bot.cli import main
from rag_bot.config import Settings
from rag_bot.documents.answer import build_messages
from rag_bot.documents.retrieval import Citation
from rag_bot.errors import ConfigError
from rag_bot.profile_preview import render_preview
from rag_bot.profiles import DEFAULT_PROFILES_FILE, LLMSettings, load_profiles
from rag_bot.wiring import build_llm


def _write(tmp_path: Path, edit: dict[str, object]) -> Path:
    raw = yaml.safe_load(DEFAULT_PROFILES_FILE.read_text(encoding="utf-8"))
    raw["profiles"]["support"].update(edit)
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def test_the_shipped_profiles_carry_greetings_starters_and_instructions_in_both_languages() -> None:
    config = load_profiles()
    for profile in config.profiles.values():
        assert set(profile.greeting) == {"ru", "en"} and set(profile.starters) == {"ru", "en"}
        assert set(profile.name) == {"ru", "en"} and profile.instructions.refuse
    support = config.profile("support")
    assert not support.data_access and config.profile("analyst").data_access
    assert "Top customers 2024" in [s.label for s in config.profile("analyst").starters_for("en")]
    assert "Laptop returns" in [s.label for s in support.starters_for("en")]
    # The support bot's own prompt (customer-facing, offers a specialist) replaces the built-in one.
    assert "support specialist" in support.system_prompt("en", prompts.DOCS_SYSTEM["en"])
    assert "«вы»" in support.system_prompt("ru", prompts.DOCS_SYSTEM["ru"])
    # Without its own system prompt a profile keeps the built-in one.
    assert config.profile("analyst").system_prompt("en", "BUILT-IN") == "BUILT-IN"


@pytest.mark.parametrize(("edit", "named"), [
    ({"instructions": {"tone": {"en": "x"}, "voice": "loud"}}, "unknown key 'profiles.support.instructions.voice'"),
    ({"llm": {"temperature": 7}}, "profiles.support.llm.temperature"),
    ({"starters": {"de": [{"label": "a", "message": "b"}]}}, "profiles.support.starters.de"),
    ({"instructions": {"system": {"en": "English only"}}}, "profiles.support.instructions.system"),
    ({"greeting": "hello"}, "profiles.support.greeting"),
])
def test_a_bad_profile_key_is_an_error_naming_the_file_and_the_key(tmp_path: Path, edit: dict[str, object],
                                                                   named: str) -> None:
    path = _write(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_profiles(path)
    assert str(path) in str(err.value) and named in str(err.value), str(err.value)


def test_the_profiles_system_prompt_reaches_the_document_answer() -> None:
    support = load_profiles().profile("support")
    citation = Citation(number=1, title="Warranty", source="warranty.md", section="", page=None,
                        passage="Laptops: 24 months.", domain="support")
    messages = build_messages("How long is the warranty?", [citation], "en",
                              support.docs_system(prompts.DOCS_SYSTEM))
    assert messages[0].content == support.system_prompt("en", prompts.DOCS_SYSTEM["en"])
    assert build_messages("q", [citation], "en")[0].content == prompts.DOCS_SYSTEM["en"]


def test_a_profiles_llm_settings_and_lora_adapter_choose_the_model_asked_for() -> None:
    settings = Settings(llm_model="base-model", llm_temperature=0.0, llm_max_tokens=512)
    own = build_llm(settings, LLMSettings(lora_adapter="support-lora", temperature=0.3, max_tokens=256))
    assert (own.model, own._temperature, own._max_tokens) == ("support-lora", 0.3, 256)
    assert build_llm(settings).model == "base-model"
    assert build_llm(settings, LLMSettings(model="qwen2.5-coder-7b")).model == "qwen2.5-coder-7b"


def test_profiles_preview_shows_what_the_profile_will_say(tmp_path: Path) -> None:
    settings = Settings(llm_model="base-model")
    text = render_preview(load_profiles(), "support", settings)
    support = load_profiles().profile("support")
    assert support.greeting["ru"] in text and support.greeting["en"] in text
    assert all(s.message in text for s in support.starters_for("ru") + support.starters_for("en"))
    assert "data access: no" in text and "model: base-model" in text

    result = CliRunner().invoke(main, ["profiles", "preview", "nobody"])
    assert result.exit_code != 0 and "There is no bot profile 'nobody'" in result.output
