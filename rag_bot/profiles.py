"""Domains, intents and bot profiles, loaded from one YAML file (`profiles.yaml`) into pydantic models.

Adding a domain is a YAML edit: the router builds its prototypes from each entry's description and
example questions, and profiles list the domains they may search. Unknown keys are an error that
names the file and the key, so a typo never silently disables a setting.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rag_bot.config import PROJECT_ROOT
from rag_bot.errors import ConfigError

DEFAULT_PROFILES_FILE = PROJECT_ROOT / "profiles.yaml"

Intent = Literal["docs", "sql", "chart", "smalltalk", "out_of_scope"]
INTENTS: tuple[Intent, ...] = ("docs", "sql", "chart", "smalltalk", "out_of_scope")
# Intents that read a domain's documents or data; the others carry no domain.
DOMAIN_INTENTS: frozenset[str] = frozenset({"docs", "sql", "chart"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Described(_Strict):
    """A class the router recognises: a description per language and example user messages."""

    description: dict[Literal["ru", "en"], str]
    examples: list[str] = Field(min_length=1)

    @field_validator("examples")
    @classmethod
    def _no_blank_examples(cls, value: list[str]) -> list[str]:
        if any(not e.strip() for e in value):
            raise ValueError("examples must not be blank")
        return value


class RouterConfig(_Strict):
    intent_confidence: float = Field(default=0.70, ge=0.0, le=1.0)
    domain_confidence: float = Field(default=0.60, ge=0.0, le=1.0)
    domain_margin: float = Field(default=0.15, ge=0.0, le=1.0)
    on_ambiguous_domain: Literal["search_both", "clarify"] = "search_both"
    # Soft routing: search the top domains until their probabilities add up to this (0 = off),
    # at most max_domains of them.
    domain_coverage: float = Field(default=0.0, ge=0.0, le=1.0)
    max_domains: int = Field(default=3, ge=1)
    # The fast path's model over the examples (compared in docs/EVALUATION.md, router section).
    classifier: Literal["logreg", "prototypes"] = "logreg"
    # Generated example messages (JSON lines, see rag_bot/assistant/router_examples.py), relative to this file.
    training_file: Path | None = None
    # A docs question whose best document chunk is less similar than this (cosine) is out of scope:
    # nothing the bot may read is about it. None: no such check.
    min_relevance: float | None = Field(default=None, ge=0.0, le=1.0)


Language = Literal["ru", "en"]
PerLanguage = dict[Language, str]


def in_language(texts: PerLanguage | str, language: str) -> str:
    """The text for `language`, else English, else any; a plain string serves every language."""
    if isinstance(texts, str):
        return texts
    return texts.get(language) or texts.get("en") or next(iter(texts.values()), "")  # type: ignore[call-overload]


class Starter(_Strict):
    """A suggested first question on the welcome screen: a short label and the message it sends."""

    label: str = Field(min_length=1, max_length=60)
    message: str = Field(min_length=1)


class Instructions(_Strict):
    """What the bot is told: its system prompt for document answers, its tone, and what it refuses.

    `system` replaces the built-in document prompt (rag_bot/prompts.py: DOCS_SYSTEM) when set; `tone`
    is appended to it. `refuse` is what the bot says to an out-of-scope request.
    """

    system: PerLanguage = Field(default_factory=dict)
    tone: PerLanguage = Field(default_factory=dict)
    refuse: PerLanguage = Field(default_factory=dict)


class LLMSettings(_Strict):
    """Per-profile model choice; unset fields use the server's RAG_BOT_LLM_* settings.

    `lora_adapter` is the name vLLM serves an adapter under (`vllm serve ... --lora-modules NAME=PATH`):
    requests then ask for that name instead of the base model.
    """

    model: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=16, le=8192)
    lora_adapter: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:/-]{1,128}$")

    @property
    def overrides(self) -> bool:
        return any(v is not None for v in (self.model, self.temperature, self.max_tokens, self.lora_adapter))


class Profile(_Strict):
    """One bot = knowledge + instructions: who it talks to (audience), what it may do (intents), where it
    may look (domains), what it says (name, description, greeting, starters, instructions) and with which
    model (llm)."""

    name: PerLanguage = Field(default_factory=dict)
    description: PerLanguage | str = ""
    audience: Literal["public", "internal"]
    intents: list[Intent] = Field(min_length=1)
    domains: list[str] = Field(min_length=1)
    greeting: PerLanguage = Field(default_factory=dict)
    starters: dict[Language, list[Starter]] = Field(default_factory=dict)
    instructions: Instructions = Instructions()
    llm: LLMSettings = LLMSettings()
    follow_ups: bool = True  # offer 2-3 next questions after each answer (rag_bot.assistant.suggestions)

    @property
    def data_access(self) -> bool:
        """May this bot query the company database (SQL answers and charts)?"""
        return bool({"sql", "chart"} & set(self.intents))

    def system_prompt(self, language: str, default: str) -> str:
        """The document-answer system prompt in `language`: the profile's own (or `default`, the built-in
        one) followed by its tone."""
        base = in_language(self.instructions.system, language) if self.instructions.system else default
        tone = in_language(self.instructions.tone, language) if self.instructions.tone else ""
        return f"{base.strip()} {tone.strip()}".strip()

    def docs_system(self, default: dict[str, str]) -> dict[str, str]:
        """`system_prompt` for every language of `default` (rag_bot.prompts.DOCS_SYSTEM)."""
        return {language: self.system_prompt(language, text) for language, text in default.items()}

    def starters_for(self, language: str) -> list[Starter]:
        if not self.starters:
            return []
        return self.starters.get(language) or self.starters.get("en") or next(iter(self.starters.values()))  # type: ignore[call-overload]


class ProfilesConfig(_Strict):
    router: RouterConfig = RouterConfig()
    intents: dict[Intent, Described]
    domains: dict[str, Described] = Field(min_length=1)
    profiles: dict[str, Profile] = Field(min_length=1)

    @field_validator("domains")
    @classmethod
    def _domain_names(cls, value: dict[str, Described]) -> dict[str, Described]:
        for name in value:
            if not name.isidentifier() or not name.islower():
                raise ValueError(f"domain name {name!r} must be lowercase letters, digits and _")
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> ProfilesConfig:
        missing = [i for i in INTENTS if i not in self.intents]
        if missing:
            raise ValueError(f"intents: missing {', '.join(missing)} (every intent needs examples)")
        for name, profile in self.profiles.items():
            unknown = [d for d in profile.domains if d not in self.domains]
            if unknown:
                raise ValueError(f"profiles.{name}.domains: unknown domain(s) {', '.join(unknown)}")
            if profile.instructions.system and set(profile.instructions.system) != {"ru", "en"}:
                raise ValueError(f"profiles.{name}.instructions.system: give the prompt in both ru and en "
                                 "(the bot answers in the user's language)")
        return self

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise ConfigError(
                f"There is no bot profile '{name}'. Known profiles: {', '.join(sorted(self.profiles))}."
            ) from None


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def load_profiles(path: Path = DEFAULT_PROFILES_FILE) -> ProfilesConfig:
    """Read and validate the profiles file; errors name the file and the offending key."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read the profiles file {path}: {exc.strerror}.") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping with `domains:` and `profiles:` sections.")
    try:
        config = ProfilesConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = _location(error["loc"])
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown key '{where}'")
            else:
                problems.append(f"{where}: {error['msg']}")
        raise ConfigError(f"{path}: " + "; ".join(problems)) from exc
    training = config.router.training_file
    if training is not None and not training.is_absolute():
        router = config.router.model_copy(update={"training_file": (path.parent / training).resolve()})
        config = config.model_copy(update={"router": router})
    return config


@lru_cache(maxsize=4)
def get_profiles(path: Path = DEFAULT_PROFILES_FILE) -> ProfilesConfig:
    """The profiles file, read once per path."""
    return load_profiles(path)
