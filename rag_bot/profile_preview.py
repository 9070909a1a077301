"""`rag-bot profiles preview NAME`: what a bot profile will say and reach, before it goes live.

Everything shown comes from the same code paths the chat, the API and the MCP server use (the system
prompt the document answers get, the greeting and refusal `respond` sends, the model `wiring` asks for),
so the preview cannot drift from what users see.
"""

from __future__ import annotations

from rag_bot import prompts
from rag_bot.config import Settings
from rag_bot.profiles import Profile, ProfilesConfig, in_language

LANGUAGES = ("en", "ru")


def effective_model(profile: Profile, settings: Settings) -> tuple[str, float, int]:
    """(model name asked for, temperature, max tokens), as rag_bot.wiring.build_llm resolves them."""
    own = profile.llm
    model = own.lora_adapter or own.model or settings.llm_model
    temperature = settings.llm_temperature if own.temperature is None else own.temperature
    return model, temperature, own.max_tokens or settings.llm_max_tokens


def render_preview(config: ProfilesConfig, name: str, settings: Settings) -> str:
    """A plain-text page: identity, knowledge, model, then per language what the bot says."""
    profile = config.profile(name)
    model, temperature, max_tokens = effective_model(profile, settings)
    adapter = " (LoRA adapter over the served base model)" if profile.llm.lora_adapter else ""
    lines = [
        f"Profile '{name}'",
        f"  knowledge: {profile.audience} documents of {', '.join(profile.domains)}; "
        f"answers {', '.join(profile.intents)}; data access: {'yes' if profile.data_access else 'no'}",
        f"  model: {model}{adapter}, temperature {temperature:g}, max tokens {max_tokens}",
    ]
    for language in LANGUAGES:
        greeting = in_language(profile.greeting, language) if profile.greeting else prompts.text("smalltalk", language)
        refuse = (in_language(profile.instructions.refuse, language) if profile.instructions.refuse
                  else prompts.text("out_of_scope", language))
        lines += [
            "",
            f"[{language}] {in_language(profile.name, language) if profile.name else name}: "
            f"{in_language(profile.description, language)}",
            f"  greeting: {greeting}",
            "  starters:" + ("" if profile.starters_for(language) else " (none)"),
            *[f"    - {s.label}: {s.message}" for s in profile.starters_for(language)],
            f"  system prompt for document answers: {profile.system_prompt(language, prompts.DOCS_SYSTEM[language])}",
            f"  out-of-scope reply: {refuse}",
        ]
        if not profile.data_access:
            lines.append(f"  data questions get: {prompts.text('not_permitted', language)}")
    return "\n".join(lines)
