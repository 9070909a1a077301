"""Generate the router's multilingual training messages offline with the bundled LLM.

Input is only the profiles file: each domain's and intent's description. The LLM is asked for
messages a user of the company assistant would send (docs questions, data questions and chart
requests per domain; greetings; out-of-scope requests), in Russian and English. No eval message is
read or shown; `tests/test_router_material.py` refuses any result that is a near-copy of one.

    RAG_BOT_LLM_BASE_URL=http://127.0.0.1:8041/v1 .venv/bin/python knowledge_base/router/generate_examples.py

Writes knowledge_base/router/generated_examples.jsonl (one message per line: text, intent, domain,
language, and the prompt's key), which `profiles.yaml` names as `router.training_file`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rag_bot.assistant.router_examples import normalise  # noqa: E402
from rag_bot.config import get_settings  # noqa: E402
from rag_bot.llm.base import ChatMessage  # noqa: E402
from rag_bot.llm.openai_compat import OpenAICompatClient  # noqa: E402
from rag_bot.profiles import DEFAULT_PROFILES_FILE, load_profiles  # noqa: E402
from rag_bot.prompts import detect_language  # noqa: E402

OUT = Path(__file__).with_name("generated_examples.jsonl")
COMPANY = "TechnoSnab, a B2B distributor of office and IT equipment"
LANGUAGE_NAMES = {"en": "English", "ru": "Russian"}

SYSTEM = (
    "You write realistic example messages that users send to a company's chat assistant. Write every "
    "message in {language}. One message per line. No numbering, no quotes, no explanations."
)
# What each kind of message is, in the words of the intents' meaning (not of any eval set).
KINDS = {
    "docs": (
        "questions about {topic}. Each question is answered by the company's documents: policies, "
        "rules, procedures, instructions, price lists or FAQs (not by counting data)."
    ),
    "sql": (
        "questions about {topic} that need numbers from the company database: counts, totals, "
        "averages, rankings, trends over months or years, breakdowns by region, segment or category."
    ),
    "chart": (
        "requests to draw a chart, graph, plot, diagram or histogram of company data about {topic}."
    ),
}
# Out of scope and smalltalk have no domain; several prompts widen what they cover.
FREE = {
    "smalltalk": [
        "greetings, thanks, goodbyes and small talk with the assistant",
        "questions about the assistant itself: who it is, what it can do, how it works",
    ],
    "out_of_scope": [
        "general knowledge questions that have nothing to do with the company (science, geography, "
        "history, food and nutrition, health, sport, films, weather, news)",
        "requests for personal advice or help unrelated to work (cooking, travel plans, shopping for "
        "yourself, relationships, fitness, homework)",
        "questions about other companies' products and services (banks, phone operators, airlines, "
        "streaming services, car makers, online shops)",
        "requests for creative writing, jokes, translation or writing program code, and requests to "
        "change or delete company data or reveal passwords",
    ],
}
STYLES = (
    "Mix short and long messages, formal and casual wording; write a few in lowercase without a "
    "question mark and one or two with a small typo."
)


def _lines(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip('"«»').strip()
        if 3 <= len(line) <= 160:
            out.append(line)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-prompt", type=int, default=12, help="messages asked for per prompt")
    parser.add_argument("--profiles-file", type=Path, default=DEFAULT_PROFILES_FILE)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--temperature", type=float, default=0.8)
    args = parser.parse_args()
    settings = get_settings()
    config = load_profiles(args.profiles_file)
    llm = OpenAICompatClient(settings.llm_base_url, settings.llm_model, temperature=args.temperature,
                             timeout_s=600.0, max_tokens=700)
    jobs: list[tuple[str, str | None, str, str]] = []  # intent, domain, language, what to write
    for language in ("ru", "en"):
        for domain, described in config.domains.items():
            topic = described.description[language if language in described.description else "en"]  # type: ignore[index]
            for intent, kind in KINDS.items():
                jobs.append((intent, domain, language, kind.format(topic=topic)))
        for intent, topics in FREE.items():
            for topic in topics:
                jobs.append((intent, None, language, topic + "."))
    seen: set[str] = set()
    written = 0
    started = time.perf_counter()
    with args.out.open("w", encoding="utf-8") as out:
        for number, (intent, domain, language, what) in enumerate(jobs, 1):
            prompt = (
                f"Write {args.per_prompt} different messages that employees or customers of {COMPANY} might "
                f"send to its assistant: {what} {STYLES}"
            )
            messages = [
                ChatMessage("system", SYSTEM.format(language=LANGUAGE_NAMES[language])),
                ChatMessage("user", prompt),
            ]
            reply = llm.complete(messages).text
            kept = 0
            for text in _lines(reply):
                key = normalise(text)
                # Keep the language asked for (the model sometimes answers in English) and no repeats.
                if not key or key in seen or detect_language(text) != language:
                    continue
                seen.add(key)
                row = {"text": text, "intent": intent, "domain": domain, "language": language,
                       "prompt": f"{intent}/{domain or '-'}/{language}"}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                kept += 1
            written += kept
            print(f"[{number}/{len(jobs)}] {intent}/{domain}/{language}: {kept} kept, "  # noqa: T201 - progress
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    print(f"wrote {written} messages to {args.out}")  # noqa: T201 - a script's output


if __name__ == "__main__":
    main()
