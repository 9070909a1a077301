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
    intent_confidence: float = Field(0.70, ge=0.0, le=1.0)
    domain_confidence: float = Field(0.60, ge=0.0, le=1.0)
    domain_margin: float = Field(0.15, ge=0.0, le=1.0)
    on_ambiguous_domain: Literal["search_both", "clarify"] = "search_both"
    # Soft routing: search the top domains until their probabilities add up to this (0 = off),
    # at most max_domains of them.
    domain_coverage: float = Field(0.0, ge=0.0, le=1.0)
    max_domains: int = Field(3, ge=1)
    # The fast path's model over the examples (compared in docs/EVALUATION.md, router section).
    classifier: Literal["logreg", "prototypes"] = "logreg"
    # Generated example messages (JSON lines, see rag_bot/assistant/router_examples.py), relative to this file.
    training_file: Path | None = None
    # A docs question whose best document chunk is less similar than this (cosine) is out of scope:
    # nothing the bot may read is about it. None: no such check.
    min_relevance: float | None = Field(None, ge=0.0, le=1.0)


class Profile(_Strict):
    """One bot: who it talks to (audience), what it may do (intents) and where it may look (domains)."""

    description: str = ""
    audience: Literal["public", "internal"]
    intents: list[Intent] = Field(min_length=1)
    domains: list[str] = Field(min_length=1)


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
