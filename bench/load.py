"""Load test: N simulated users against `rag-bot serve`, then the same concurrency against the LLM alone.

    uv run --no-sync python bench/load.py --users 50 --duration 120
    uv run --no-sync python bench/load.py --users 3 --duration 20 --out-dir /tmp/load   # a quick try

Phase 1 (the bot). Users start over --ramp seconds and, until --duration has passed, each asks a question
from a small fixed list (docs questions of the public `support` profile), waits for the whole answer and
asks the next one. Users are of two kinds, interleaved (--chat-share of them chat users):

- API users: POST /api/v1/ask/stream (Server-Sent Events: route, token..., sources, done), one
  conversation per user, with an API key this script creates in a temporary keys file (rate limit high
  enough never to refuse);
- chat users: sign in like the browser (POST /login, the session cookie), then speak Chainlit's
  socket.io protocol over a websocket (path /ws/socket.io) with python-socketio's asyncio client, as
  Chainlit's own frontend does: connect with `auth` {sessionId, clientType, chatProfile, ...}, emit
  `connection_successful`, then per question emit `client_message` and read the `on_message` step
  (`new_message`), the reply's `stream_start` and `stream_token`s, the reply (`new_message`) and the end of
  the step (`update_message`).

After --duration no new question starts; questions in flight finish or hit --timeout (an error).

Phase 2 (the LLM alone). The same number of concurrent clients stream /v1/chat/completions from the LLM
server for the same duration, with the exact messages the bot sends for these questions (built here with
the bot's own retrieval and prompt code for the support profile), so one can tell whether the bot or the
LLM is the bottleneck.

Without --url the script starts `rag-bot serve` on a free port against the running PostgreSQL (the
embedded one is started if it is down, and stopped again) and the running LLM server, and stops what it
started by PID. Reported: requests completed, errors by kind, p50/p95 time to first token and total,
answer tokens/s, and the peak RSS of the serve process against --memory-budget-gb. Results go to
bench/results/load.json and load.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import socketio

from rag_bot import prompts
from rag_bot.config import PROJECT_ROOT, Settings
from rag_bot.ui.chat_history import META_KEY

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROFILE = "support"
QUESTIONS = [
    "What is the return period for a laptop?",
    "Какой гарантийный срок на ноутбуки?",
    "When is customer support available?",
    "Сколько стоит доставка по Москве?",
    "How can I pay for an order?",
    "Как вернуть товар надлежащего качества?",
]
# What the chat shows instead of an answer when a turn failed (rag_bot/ui/render.py) -> the API's error kinds.
CHAT_ERROR_TEXTS = {
    prompts.text(key, language): kind
    for key, kind in (
        ("llm_down", "llm_unavailable"), ("db_down", "database_unavailable"), ("internal_error", "internal")
    )
    for language in ("ru", "en")
}
KEY_RATE_PER_MINUTE = 1_000_000
LLM_NOTE = (
    "On this project's CPU host the LLM is Qwen2.5-Coder-1.5B (Q4_K_M) in llama.cpp on 2 CPU cores, which "
    "serves one request at a time: with many users, most of them wait in its queue."
)


@dataclass
class Sample:
    """One question: who asked, when (s after the phase start), and what came back."""

    channel: str  # api | chat | llm
    user: int
    question: str
    started_s: float
    finished: bool = False  # the server ended the turn normally (the answer may still be empty)
    ok: bool = False  # finished with a non-empty answer
    error: str | None = None
    ttft_s: float | None = None  # to the first answer token
    total_s: float | None = None  # to the end of the answer
    tokens: int = 0  # answer tokens, counted as streamed chunks (one token each from llama.cpp)
    chars: int = 0
    detail: str | None = None
    answer_head: str | None = None  # the answer's first characters, to see what came back


class Phase:
    """The shared clock and the samples of one phase; users ask while `open()`."""

    def __init__(self, name: str, duration_s: float) -> None:
        self.name = name
        self.duration_s = duration_s
        self.t0 = time.perf_counter()
        self.samples: list[Sample] = []
        self.in_flight = 0
        self.last_end = self.t0

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def open(self) -> bool:
        return self.now() < self.duration_s

    async def run(self, sample: Sample, ask: Callable[[Sample], Awaitable[None]]) -> Sample:
        self.in_flight += 1
        try:
            await ask(sample)
        finally:
            self.in_flight -= 1
        # Not reached when the run is interrupted: a question cut off by the interruption is not counted.
        self.samples.append(sample)
        self.last_end = time.perf_counter()
        return sample

    def wall_s(self) -> float:
        return max(self.last_end - self.t0, 1e-9)

    async def report_progress(self, every_s: float = 15.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            done = sum(s.ok for s in self.samples)
            failed = len(self.samples) - done
            log(f"{self.name} t={self.now():.0f}s: {done} answered, {failed} failed, {self.in_flight} in flight")


# -- API users -------------------------------------------------------------------------------------------------------
async def api_user(
    index: int, first: int, phase: Phase, client: httpx.AsyncClient, key: str, timeout_s: float
) -> None:
    conversation = f"load-{uuid.uuid4().hex[:12]}"
    turn = 0
    while phase.open():
        question = QUESTIONS[(first + turn) % len(QUESTIONS)]
        turn += 1
        sample = Sample("api", index, question, phase.now())
        await phase.run(sample, lambda s: ask_api(s, client, key, conversation, timeout_s))


async def ask_api(sample: Sample, client: httpx.AsyncClient, key: str, conversation: str, timeout_s: float) -> None:
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream(
                "POST", "/api/v1/ask/stream", headers={"X-API-Key": key},
                json={"question": sample.question, "conversation_id": conversation},
            ) as response:
                if response.status_code != 200:
                    body = (await response.aread()).decode("utf-8", "replace")
                    sample.error = _error_kind(body) or f"http_{response.status_code}"
                    sample.detail = body[:200]
                    return
                event = "message"
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line[5:].strip())
                        if event == "token":
                            if sample.tokens == 0:
                                sample.ttft_s = time.perf_counter() - t0
                            sample.tokens += 1
                        elif event == "done":
                            sample.total_s = time.perf_counter() - t0
                            sample.finished = True
                            sample.chars = len(data.get("answer") or "")
                            sample.answer_head = (data.get("answer") or "")[:80]
                        elif event == "error":
                            sample.error = str(data.get("error") or "error_event")
                            sample.detail = str(data.get("message") or "")[:200]
                    elif not line:
                        event = "message"
    except TimeoutError:
        sample.error = "timeout"
    except httpx.HTTPError as exc:
        sample.error = f"http_{type(exc).__name__}"
        sample.detail = str(exc)[:200]
    _judge(sample)


def _error_kind(body: str) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(body).get("error")) or None
    return None


def _judge(sample: Sample) -> None:
    """ok = the turn ended normally with answer text; a turn that ended with nothing to read is an error."""
    if sample.error is None and not sample.finished:
        sample.error = "incomplete"
    if sample.error is None and sample.tokens == 0:
        sample.error = "empty_answer"
    sample.ok = sample.error is None


# -- chat users (Chainlit's socket.io protocol) ----------------------------------------------------------------------
CHAT_EVENTS = ("stream_start", "stream_token", "new_message", "update_message", "task_end", "disconnect")


class ChatSession:
    """One browser tab: signed in, one websocket, one Chainlit session (thread)."""

    def __init__(self, base_url: str, username: str, password: str, header_name: str) -> None:
        self.base_url, self.username, self.password, self.header_name = base_url, username, password, header_name
        self.events: asyncio.Queue[tuple[str, Any, float]] = asyncio.Queue()
        self.sio = socketio.AsyncClient(reconnection=False)
        for name in CHAT_EVENTS:
            self.sio.on(name, self._handler(name))

    def _handler(self, name: str) -> Callable[..., Awaitable[None]]:
        async def handle(*args: Any) -> None:
            self.events.put_nowait((name, args[0] if args else None, time.perf_counter()))

        return handle

    async def sign_in(self, http: httpx.AsyncClient) -> str:
        """The session cookie, as the login page gets it (password or proxy-header sign-in, or none)."""
        config = (await http.get("/auth/config")).json()
        if not config.get("requireLogin"):
            return ""
        if config.get("passwordAuth"):
            response = await http.post("/login", data={"username": self.username, "password": self.password})
        elif config.get("headerAuth"):
            response = await http.post("/auth/header", headers={self.header_name: self.username})
        else:
            raise RuntimeError("the chat needs a sign-in this script cannot do (OAuth)")
        response.raise_for_status()
        return "; ".join(f"{name}={value}" for name, value in http.cookies.items())

    async def connect(self, timeout_s: float) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s) as http:
            cookie = await self.sign_in(http)
        await self.sio.connect(
            self.base_url, socketio_path="/ws/socket.io", transports=["websocket"], wait_timeout=timeout_s,
            headers={"Cookie": cookie} if cookie else {},
            auth={"clientType": "webapp", "sessionId": str(uuid.uuid4()), "threadId": "", "userEnv": "{}",
                  "chatProfile": PROFILE},
        )
        await self.sio.emit("connection_successful")
        # The server answers connection_successful with task_end; the first question waits for it.
        async with asyncio.timeout(timeout_s):
            while (await self.events.get())[0] != "task_end":
                pass

    async def ask(self, sample: Sample, timeout_s: float) -> None:
        """One turn, told apart from anything else on the socket by ids: our message M, the `on_message` run
        step R (parentId M), the reply (parentId R); the turn ends when R is updated with its end time."""
        message_id = str(uuid.uuid4())
        t0 = time.perf_counter()
        await self.sio.emit("client_message", {"message": {
            "threadId": "", "id": message_id, "name": self.username, "type": "user_message",
            "output": sample.question, "createdAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "metadata": {"location": self.base_url},
        }, "fileReferences": []})
        run_id, reply_id, final = None, None, None
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    name, data, at = await self.events.get()
                    if name == "disconnect":
                        sample.error = "disconnected"
                        return
                    data = data if isinstance(data, dict) else {}
                    kind, parent = data.get("type"), data.get("parentId")
                    if name == "new_message" and kind == "run" and parent == message_id:
                        run_id = data.get("id")
                    elif run_id is None:
                        continue  # on_chat_start's step, or an earlier turn's leftovers
                    elif name == "stream_start" and kind == "assistant_message" and parent == run_id:
                        reply_id = data.get("id")
                        sample.ttft_s = at - t0  # stream_start carries the first token
                        sample.tokens = 1
                    elif name == "stream_token" and data.get("id") == reply_id and reply_id is not None:
                        sample.tokens += 1
                    elif name == "new_message" and kind == "assistant_message" and parent == run_id:
                        final = data
                        sample.total_s = at - t0
                    elif name == "update_message" and data.get("id") == run_id and data.get("end"):
                        break
        except TimeoutError:
            sample.error = "timeout"
            with contextlib.suppress(Exception):
                await self.sio.emit("stop")  # do not leave the bot working for nobody
            return
        if final is None:
            sample.error = "no_answer"
            return
        sample.finished = True
        content = str(final.get("output") or "")
        meta = (final.get("metadata") or {}).get(META_KEY) or {}
        sample.chars = len(meta.get("answer") or content)
        sample.answer_head = content[:80]
        if final.get("isError"):
            sample.error, sample.detail = "chainlit_error", content[:200]
        elif content.strip() in CHAT_ERROR_TEXTS:
            sample.error = CHAT_ERROR_TEXTS[content.strip()]
        elif not meta:
            sample.error, sample.detail = "unexpected_reply", content[:200]
        elif meta.get("intent") == "docs" and sample.tokens == 0:
            sample.error = "empty_answer"  # only the sources footer: the model streamed no text

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


async def chat_user(index: int, first: int, phase: Phase, base_url: str, args: argparse.Namespace) -> None:
    turn = 0
    while phase.open():
        session = ChatSession(base_url, args.chat_user, args.chat_password, args.auth_header)
        try:
            await session.connect(min(args.timeout, 120.0))
        except Exception as exc:  # noqa: BLE001 - counted, then the user tries again
            sample = Sample("chat", index, "(sign-in and connect)", phase.now(), error="connect_failed",
                            detail=f"{type(exc).__name__}: {exc}"[:200])
            phase.samples.append(sample)
            await session.close()
            await asyncio.sleep(5.0)
            continue
        try:
            while phase.open():
                question = QUESTIONS[(first + turn) % len(QUESTIONS)]
                turn += 1
                sample = await phase.run(Sample("chat", index, question, phase.now()),
                                         lambda s, tab=session: _ask_judged(tab, s, args.timeout))
                if sample.error in ("timeout", "disconnected"):
                    break  # a fresh tab for the next question
        finally:
            await session.close()


async def _ask_judged(session: ChatSession, sample: Sample, timeout_s: float) -> None:
    await session.ask(sample, timeout_s)
    if sample.error is None and not sample.finished:
        sample.error = "incomplete"
    sample.ok = sample.error is None


async def run_bot_phase(phase: Phase, base_url: str, key: str | None, args: argparse.Namespace) -> None:
    n_chat = round(args.users * args.chat_share)
    # Interleaved, so both kinds start early in the ramp: chat users at evenly spread positions.
    kinds = ["api"] * args.users
    for i in range(n_chat):
        kinds[int(i * args.users / n_chat)] = "chat"
    if key is None and "api" in kinds:
        raise SystemExit("API users need a key: pass --api-key (with --url) or --chat-share 1.")
    # Each kind cycles through all the questions, its k-th user starting at question k (interleaving the
    # kinds must not hand one kind the odd questions and the other the even ones).
    seen: Counter[str] = Counter()
    firsts = []
    for kind in kinds:
        firsts.append(seen[kind])
        seen[kind] += 1
    phase.t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=args.users + 10, max_keepalive_connections=args.users + 10)
    timeout = httpx.Timeout(args.timeout, connect=30.0)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:

        async def start(index: int, kind: str, first: int) -> None:
            await asyncio.sleep(index * args.ramp / max(1, args.users))
            if kind == "api":
                await api_user(index, first, phase, client, key or "", args.timeout)
            else:
                await chat_user(index, first, phase, base_url, args)

        progress = asyncio.create_task(phase.report_progress())
        try:
            await asyncio.gather(*(start(i, kind, firsts[i]) for i, kind in enumerate(kinds)))
        finally:
            progress.cancel()


# -- the LLM alone ---------------------------------------------------------------------------------------------------
async def run_llm_phase(
    phase: Phase, prompts_by_question: dict[str, list[dict[str, str]]], settings: Settings, args: argparse.Namespace
) -> None:
    phase.t0 = time.perf_counter()
    questions = list(prompts_by_question)
    limits = httpx.Limits(max_connections=args.llm_users + 10, max_keepalive_connections=args.llm_users + 10)
    timeout = httpx.Timeout(args.timeout, connect=30.0)
    headers = {"Authorization": f"Bearer {settings.llm_api_key.get_secret_value()}"}
    async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers) as client:

        async def user(index: int) -> None:
            await asyncio.sleep(index * args.ramp / max(1, args.llm_users))
            turn = 0
            while phase.open():
                question = questions[(index + turn) % len(questions)]
                turn += 1
                body = {"model": args.llm_model, "messages": prompts_by_question[question], "stream": True,
                        "temperature": settings.llm_temperature, "max_tokens": settings.llm_max_tokens}
                await phase.run(Sample("llm", index, question, phase.now()),
                                lambda s, b=body: ask_llm(s, client, args.llm_url, b, args.timeout))

        progress = asyncio.create_task(phase.report_progress())
        try:
            await asyncio.gather(*(user(i) for i in range(args.llm_users)))
        finally:
            progress.cancel()


async def ask_llm(
    sample: Sample, client: httpx.AsyncClient, llm_url: str, body: dict[str, Any], timeout_s: float
) -> None:
    t0 = time.perf_counter()
    finish_reason = None
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", f"{llm_url.rstrip('/')}/chat/completions", json=body) as response:
                if response.status_code != 200:
                    sample.error = f"http_{response.status_code}"
                    sample.detail = (await response.aread()).decode("utf-8", "replace")[:200]
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            if sample.tokens == 0:
                                sample.ttft_s = time.perf_counter() - t0
                            sample.tokens += 1
                            sample.chars += len(text)
                            if len(sample.answer_head or "") < 80:
                                sample.answer_head = ((sample.answer_head or "") + text)[:80]
                        finish_reason = choice.get("finish_reason") or finish_reason
        sample.total_s = time.perf_counter() - t0
        sample.finished = True
    except TimeoutError:
        sample.error = "timeout"
    except httpx.HTTPError as exc:
        sample.error = f"http_{type(exc).__name__}"
        sample.detail = str(exc)[:200]
    if sample.error is None and finish_reason is None:
        # llama-cpp-python's server ends a stream early ("[DONE]" without a finish reason) when another
        # request is waiting for the model and it runs with interrupt_requests (its default).
        sample.error = "empty_answer" if sample.tokens == 0 else "cut_short"
        sample.detail = "stream ended without finish_reason"
    _judge(sample)


def bot_prompts(settings: Settings) -> tuple[dict[str, list[dict[str, str]]], dict[str, str]]:
    """The messages the bot sends the LLM for each question (support profile), built by the bot's own code."""
    from rag_bot.assistant.conversation import Conversation
    from rag_bot.assistant.respond import respond
    from rag_bot.profiles import get_profiles
    from rag_bot.wiring import build_components

    components = build_components(settings)
    built: dict[str, list[dict[str, str]]] = {}
    how: dict[str, str] = {}
    try:
        services = components.services(PROFILE)
        profile = get_profiles(settings.profiles_file).profile(PROFILE)
        for question in QUESTIONS:
            reply = respond(question, conversation=Conversation(), profile=profile, services=services)
            if reply.prepared is not None and reply.prepared.messages:
                built[question] = [{"role": m.role, "content": m.content} for m in reply.prepared.messages]
                how[question] = f"bot prompt, intent {reply.route.intent}, {len(reply.citations)} sources"
            else:
                built[question] = [{"role": "user", "content": question}]
                how[question] = f"question only (the bot answers it without the LLM: intent {reply.route.intent})"
    finally:
        components.close()
    return built, how


# -- the serve process -----------------------------------------------------------------------------------------------
class ServeProcess:
    """`rag-bot serve` on a free port with a temporary keys file holding one key for this run."""

    def __init__(self, settings: Settings, args: argparse.Namespace, tmp: Path) -> None:
        from rag_bot.api.keys import add_key

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        keys_file = tmp / "api_keys.yaml"
        self.key = add_key(keys_file, "load-bench", PROFILE, KEY_RATE_PER_MINUTE)
        self.log_path = settings.logs_dir / "load-serve.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "RAG_BOT_UI_HOST": "127.0.0.1", "RAG_BOT_UI_PORT": str(self.port),
            "RAG_BOT_API_KEYS_FILE": str(keys_file), "RAG_BOT_API_RATE_PER_MINUTE": str(KEY_RATE_PER_MINUTE),
            "RAG_BOT_LLM_BASE_URL": args.llm_url, "RAG_BOT_LLM_MODEL": args.llm_model,
            "RAG_BOT_LLM_TIMEOUT_S": str(args.bot_llm_timeout), "RAG_BOT_UI_AUTH": "password",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 300.0) -> None:
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rag_bot.cli", "serve"], cwd=PROJECT_ROOT, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        log(f"rag-bot serve: pid {self.proc.pid} at {self.url} (log {self.log_path})")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rag-bot serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=5.0).status_code == 200:
                    break
            time.sleep(1.0)
        else:
            raise RuntimeError(f"rag-bot serve not ready in {timeout_s:.0f} s:\n{self.log_tail()}")
        # The embedder and the routers load in the background at start; the first question must not pay.
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if "API ready" in text or "warm-up failed" in text:
                break
            time.sleep(1.0)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM to the process group this script created (graceful), SIGKILL after 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        log(f"rag-bot serve: stopped (pid {self.proc.pid})")


def process_rss(pid: int, children: bool = True) -> int:
    """Resident memory (bytes) of a process (and its children): psutil when installed, else /proc."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            proc = psutil.Process(pid)
            total = proc.memory_info().rss
            for child in proc.children(recursive=True) if children else []:
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return int(total)
        except psutil.Error:
            return 0
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir() if children else []:
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total


class RssSampler:
    """Peak RSS of a process alone and with its children, sampled every `interval_s` in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak = 0
        self.peak_main = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, process_rss(self.pid))
            self.peak_main = max(self.peak_main, process_rss(self.pid, children=False))
            self._stop.wait(self.interval_s)


def record_peak(sampler: RssSampler, memory: dict[str, Any]) -> None:
    sampler.stop()
    memory["serve_peak_rss_gb"] = round(sampler.peak / 2**30, 2)
    memory["serve_main_process_peak_rss_gb"] = round(sampler.peak_main / 2**30, 2)


def command_line(pid: int | None) -> str | None:
    with contextlib.suppress(OSError):
        if pid:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return None


class OtherLLMClients:
    """Which other processes hold connections to the LLM server while the run goes (psutil; root sees all)."""

    def __init__(self, llm_url: str, interval_s: float = 5.0) -> None:
        self.port = urlsplit(llm_url).port or 80
        self.interval_s = interval_s
        self.ours: set[int] = {os.getpid()}
        self.seen: dict[str, int] = {}  # command line -> samples it was seen in
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _ours(self, pid: int) -> bool:
        """This script or the serve it started (or any process in their groups)."""
        with contextlib.suppress(OSError):
            return pid in self.ours or os.getpgid(pid) in self.ours
        return False

    def start(self) -> OtherLLMClients:
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return {"samples": self.samples, "clients": self.seen}

    def _run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        while not self._stop.is_set():
            clients: set[str] = set()
            with contextlib.suppress(psutil.Error, OSError):
                for conn in psutil.net_connections(kind="tcp"):
                    if conn.raddr and conn.raddr.port == self.port and conn.pid and not self._ours(conn.pid):
                        clients.add(_short_cmd(command_line(conn.pid) or str(conn.pid))[:160])
            self.samples += 1
            for cmd in clients:
                self.seen[cmd] = self.seen.get(cmd, 0) + 1
            self._stop.wait(self.interval_s)


def listening_pid(url: str) -> int | None:
    """The PID listening on the URL's port (for --url), via psutil; None when it cannot be seen."""
    try:
        import psutil

        port = urlsplit(url).port or 80
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return int(conn.pid)
    except Exception:  # noqa: BLE001 - memory is then not measured
        return None
    return None


# -- reporting -------------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (k - low), 2)


def summarize(samples: list[Sample], wall_s: float) -> dict[str, Any]:
    answered = [s for s in samples if s.ok]
    ttft = [s.ttft_s for s in answered if s.ttft_s is not None]
    total = [s.total_s for s in samples if s.finished and s.total_s is not None]
    tokens = sum(s.tokens for s in answered)
    finished = sum(s.finished for s in samples)
    return {
        "requests": len(samples),
        "completed": len(answered),
        # Turns the server ended normally, empty answers included: the work the LLM got through.
        "finished": finished,
        "finished_per_min": round(finished / wall_s * 60, 2) if wall_s else None,
        "errors": dict(Counter(s.error for s in samples if s.error).most_common()),
        "ttft_p50_s": percentile(ttft, 0.5),
        "ttft_p95_s": percentile(ttft, 0.95),
        "total_p50_s": percentile(total, 0.5),
        "total_p95_s": percentile(total, 0.95),
        "tokens_per_answer_p50": percentile([float(s.tokens) for s in answered], 0.5),
        "answer_tokens": tokens,
        "wall_s": round(wall_s, 1),
        "answer_tokens_per_s": round(tokens / wall_s, 2) if wall_s else None,
        "completed_per_min": round(len(answered) / wall_s * 60, 2) if wall_s else None,
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu, "cores": os.cpu_count(),
        "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
    }


def busiest_processes(n: int = 6) -> list[str]:
    """What else was using the CPU when the run started (name, CPU %, over one second)."""
    try:
        import psutil
    except ImportError:
        return []
    procs = list(psutil.process_iter(["pid", "cmdline", "name"]))
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(1.0)
    usage = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(proc.info["cmdline"] or [proc.info["name"] or "?"])
            usage.append((proc.cpu_percent(None), cmd))
    return [f"{cpu:.0f}% {cmd[:110]}" for cpu, cmd in sorted(usage, reverse=True)[:n] if cpu >= 5]


def auto_notes(bot: Phase, llm: Phase | None, llm_cmd: str | None) -> list[str]:
    """What the numbers need said next to them."""
    notes = []
    cut = Counter(s.error for s in (llm.samples if llm else []) if s.error in ("empty_answer", "cut_short"))
    if cut:
        interrupting = bool(llm_cmd and "llama_cpp.server" in llm_cmd and "--interrupt_requests" not in llm_cmd)
        notes.append(
            f"{sum(cut.values())} of {len(llm.samples) if llm else 0} streams from the LLM server alone ended "
            "without a finish reason (`[DONE]` after the role chunk, or after a few tokens)"
            + (": the server is llama-cpp-python's, started without `--interrupt_requests False`, and by default "
               "it ends a running stream as soon as another request waits for the model. Under concurrency most "
               "streamed answers are therefore empty; the bot's `empty_answer` errors are the same effect."
               if interrupting else ".")
        )
    empty = sum(s.error == "empty_answer" for s in bot.samples)
    if empty and not cut:
        notes.append(f"{empty} bot answers ended with no text from the model (`empty_answer`).")
    return notes


def fmt(value: Any, unit: str = "") -> str:
    return "–" if value is None else f"{value}{unit}"


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    m, cfg = result["machine"], result["config"]
    rows = [("bot, all users", result["bot"]["all"]), ("bot, API users (SSE)", result["bot"]["api"]),
            ("bot, chat users (socket.io)", result["bot"]["chat"])]
    if result.get("llm"):
        rows.append(("LLM server alone, same prompts", result["llm"]["all"]))
    memory = result["memory"]
    lines = [
        "# Load: simulated users against `rag-bot serve`",
        "",
        f"Generated by `bench/load.py` at {result['measured_at']}. Command: `{result['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM. Load average (1/5/15 min) before "
        f"{'/'.join(str(x) for x in result['load_average_before'])}, after "
        f"{'/'.join(str(x) for x in result['load_average_after'])}.",
        f"LLM: `{cfg['llm_model']}` at {cfg['llm_url']}"
        + (f" (`{_short_cmd(cfg['llm_server_command'])}`)" if cfg.get("llm_server_command") else "")
        + f". {LLM_NOTE}",
        "",
        f"{cfg['users']} users ({cfg['api_users']} HTTP API users on /api/v1/ask/stream, {cfg['chat_users']} chat "
        f"users over Chainlit's websocket) started over {cfg['ramp_s']} s and asked questions for "
        f"{cfg['duration_s']} s, each waiting for its answer; questions still running then were allowed to finish "
        f"(client timeout {cfg['timeout_s']} s, counted as an error). The LLM row: {cfg['llm_users']} concurrent "
        f"clients streaming /v1/chat/completions for {cfg['llm_duration_s']} s with the bot's own prompts for "
        "the same questions."
        + (f" The serve process started for the run waited up to {cfg['bot_llm_timeout_s']:.0f} s for the LLM "
           "(RAG_BOT_LLM_TIMEOUT_S; the default of 120 s would turn the queue's tail into `llm_unavailable`)."
           if cfg.get("bot_llm_timeout_s") else ""),
        "",
        "| | requests | completed | errors | TTFT p50 / p95 s | total p50 / p95 s | tokens per answer (p50) "
        "| answer tokens/s | turns finished per min | wall s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, s in rows:
        errors = ", ".join(f"{kind} {n}" for kind, n in s["errors"].items()) or "0"
        lines.append(
            f"| {label} | {s['requests']} | {s['completed']} | {errors} | {fmt(s['ttft_p50_s'])} / "
            f"{fmt(s['ttft_p95_s'])} | {fmt(s['total_p50_s'])} / {fmt(s['total_p95_s'])} "
            f"| {fmt(s['tokens_per_answer_p50'])} | {fmt(s['answer_tokens_per_s'])} "
            f"| {fmt(s.get('finished_per_min'))} | {s['wall_s']} |"
        )
    peak = memory.get("serve_peak_rss_gb")
    budget = memory["budget_gb"]
    verdict = "–" if peak is None else ("within" if peak <= budget else "OVER")
    lines += [
        "",
        f"Memory of the serve process with its children: idle {fmt(memory.get('serve_idle_rss_gb'), ' GB')}, "
        f"peak under load {fmt(peak, ' GB')} — {verdict} the budget of {budget} GB "
        f"(the main process alone: idle {fmt(memory.get('serve_main_process_idle_rss_gb'), ' GB')}, peak "
        f"{fmt(memory.get('serve_main_process_peak_rss_gb'), ' GB')}; {memory.get('how', 'not measured')}).",
        "",
        "Columns: *completed* = answered with text; *errors* by kind (`timeout` = no whole answer within the "
        "client timeout; `empty_answer` = the turn ended but the model streamed no text; `cut_short` = the LLM "
        "stream ended without a finish reason). TTFT over the completed answers; total over every turn the "
        "server finished (empty answers included). Tokens are streamed chunks (one token each from llama.cpp). "
        "*Answer tokens/s* = tokens of completed answers / wall time of the phase (first start to last end); "
        "*turns finished per min* counts every turn the server ended, empty answers included.",
    ]
    other = result.get("other_llm_clients") or {}
    if other.get("samples"):
        lines += ["", f"Other clients of the LLM server during the run (its connections, sampled every 5 s, "
                  f"{other['samples']} samples): "
                  + ("; ".join(f"`{cmd}` in {n}" for cmd, n in other["clients"].items()) or "none seen") + "."]
    if result.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {note}" for note in result["notes"]]
    if result.get("other_processes"):
        lines += ["", "Busiest other processes when the run started:", ""]
        lines += [f"- `{p}`" for p in result["other_processes"]]
    path.write_text("\n".join(lines) + "\n")


# -- main ------------------------------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds during which questions start")
    parser.add_argument("--chat-share", type=float, default=0.5, help="share of users on the websocket chat")
    parser.add_argument("--ramp", type=float, default=10.0, help="users start evenly over this many seconds")
    parser.add_argument("--timeout", type=float, default=600.0, help="client timeout per question, seconds")
    parser.add_argument("--url", help="a running `rag-bot serve`; default: start one on a free port")
    parser.add_argument("--api-key", default=os.environ.get("RAG_BOT_LOAD_API_KEY"),
                        help="with --url: a key of the support profile (env RAG_BOT_LOAD_API_KEY)")
    parser.add_argument("--serve-pid", type=int, help="with --url: the PID whose memory to sample")
    parser.add_argument("--chat-user", default="support")
    parser.add_argument("--chat-password", default="support-demo")
    parser.add_argument("--auth-header", default=settings.auth_header, help="for a chat with header sign-in")
    parser.add_argument("--llm-url", default=settings.llm_base_url)
    parser.add_argument("--llm-model", default=settings.llm_model)
    parser.add_argument("--bot-llm-timeout", type=float, default=None,
                        help="RAG_BOT_LLM_TIMEOUT_S of the serve started here (default: --timeout, so the bot "
                        "waits in the LLM queue as long as its users do)")
    parser.add_argument("--llm-users", type=int, default=None, help="default: --users")
    parser.add_argument("--llm-duration", type=float, default=None, help="default: --duration")
    parser.add_argument("--skip-llm", action="store_true", help="no phase against the LLM alone")
    parser.add_argument("--memory-budget-gb", type=float, default=1.5)
    parser.add_argument("--note", action="append", default=[], help="a line for the results' notes")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--render-only", action="store_true", help="only rewrite load.md from load.json")
    args = parser.parse_args()
    args.llm_users = args.llm_users or args.users
    args.llm_duration = args.llm_duration or args.duration
    args.bot_llm_timeout = args.bot_llm_timeout or args.timeout
    return args


def main() -> None:
    args = parse_args()
    if args.render_only:
        render_again(args.out_dir)
        return
    # SIGTERM unwinds like Ctrl-C, so the serve process and Postgres started here are stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    settings = Settings(llm_base_url=args.llm_url, llm_model=args.llm_model)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    require_llm_port(args.llm_url)
    load_before = [round(x, 2) for x in os.getloadavg()]
    others = busiest_processes()
    llm_cmd = command_line(listening_pid(args.llm_url))
    log(f"load average {load_before}; busiest: {others}")

    started_pg = False
    serve: ServeProcess | None = None
    sampler: RssSampler | None = None
    memory: dict[str, Any] = {"budget_gb": args.memory_budget_gb}
    prompts_by_question: dict[str, list[dict[str, str]]] = {}
    prompt_sources: dict[str, str] = {}
    bot_phase = Phase("bot", args.duration)
    llm_phase = Phase("llm", args.llm_duration)
    interrupted: str | None = None
    current = bot_phase
    tmp = Path(tempfile.mkdtemp(prefix="rag-bot-load-"))
    watcher = OtherLLMClients(args.llm_url)
    watcher.ours.add(os.getpgid(0))
    try:
        if args.url is None and settings.database_url is None:
            from rag_bot.stack.postgres import embedded_pid, start_embedded

            if embedded_pid(settings.pg_data_dir) is None:
                log("PostgreSQL is down: starting the embedded server")
                start_embedded(settings.pg_data_dir)
                started_pg = True
        if not args.skip_llm:
            log("building the bot's prompts for the questions (support profile) ...")
            prompts_by_question, prompt_sources = bot_prompts(settings)
            for question, how in prompt_sources.items():
                log(f"  {question!r}: {how}")

        if args.url is None:
            serve = ServeProcess(settings, args, tmp)
            serve.start()
            if serve.proc is not None:
                watcher.ours.add(serve.proc.pid)  # its process group id
            base_url, key, pid = serve.url, serve.key, serve.proc.pid if serve.proc else None
        else:
            base_url, key, pid = args.url.rstrip("/"), args.api_key, args.serve_pid or listening_pid(args.url)
        if pid:
            memory["serve_pid"] = pid
            memory["serve_idle_rss_gb"] = round(process_rss(pid) / 2**30, 2)
            memory["serve_main_process_idle_rss_gb"] = round(process_rss(pid, children=False) / 2**30, 2)
            memory["how"] = f"sampled every 0.5 s {'with psutil' if _has_psutil() else 'from /proc VmRSS'}"
            sampler = RssSampler(pid).start()

        watcher.start()
        log(f"phase 1: {args.users} users for {args.duration:.0f} s against {base_url}")
        asyncio.run(run_bot_phase(bot_phase, base_url, key, args))
        if sampler is not None:
            record_peak(sampler, memory)
            sampler = None
        if serve is not None:
            serve.stop()
            serve = None

        if not args.skip_llm:
            log(f"phase 2: {args.llm_users} clients for {args.llm_duration:.0f} s against {args.llm_url} directly")
            current = llm_phase
            asyncio.run(run_llm_phase(llm_phase, prompts_by_question, settings, args))
    except KeyboardInterrupt:
        interrupted = (f"Interrupted (SIGTERM or Ctrl-C) in the {current.name} phase at t={current.now():.0f} s: "
                       "the questions in flight then are not counted, and a phase not yet started is missing.")
        log(interrupted)
    finally:
        other_clients = watcher.stop()
        if sampler is not None:
            record_peak(sampler, memory)
        if serve is not None:
            serve.stop()
        if started_pg:
            from rag_bot.stack.postgres import stop_embedded

            stop_embedded(settings.pg_data_dir)
            log("PostgreSQL: stopped (this script started it)")
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()

    if not bot_phase.samples:
        raise SystemExit("Interrupted before any question was answered; nothing written.")
    phases_llm = llm_phase if llm_phase.samples else None
    result = {
        "interrupted": interrupted,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join(["uv run --no-sync python bench/load.py", *sys.argv[1:]]),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "other_processes": others,
        "other_llm_clients": other_clients,
        "config": {
            "users": args.users, "api_users": args.users - round(args.users * args.chat_share),
            "chat_users": round(args.users * args.chat_share), "duration_s": args.duration, "ramp_s": args.ramp,
            "timeout_s": args.timeout, "bot_llm_timeout_s": args.bot_llm_timeout if args.url is None else None,
            "url": args.url or "started by the script", "llm_url": args.llm_url, "llm_model": args.llm_model,
            "llm_users": args.llm_users, "llm_duration_s": args.llm_duration,
            "llm_max_tokens": settings.llm_max_tokens, "llm_server_command": llm_cmd,
            "questions": QUESTIONS, "profile": PROFILE,
        },
        "bot": {
            "all": summarize(bot_phase.samples, bot_phase.wall_s()),
            "api": summarize([s for s in bot_phase.samples if s.channel == "api"], bot_phase.wall_s()),
            "chat": summarize([s for s in bot_phase.samples if s.channel == "chat"], bot_phase.wall_s()),
        },
        "llm": {"all": summarize(llm_phase.samples, llm_phase.wall_s()), "prompts": prompt_sources}
        if phases_llm else None,
        "memory": memory,
        "notes": ([interrupted] if interrupted else []) + args.note + auto_notes(bot_phase, phases_llm, llm_cmd),
        "samples": [asdict(s) for s in bot_phase.samples + llm_phase.samples],
    }
    (args.out_dir / "load.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    write_markdown(args.out_dir / "load.md", result)
    sys.stdout.write((args.out_dir / "load.md").read_text())
    if interrupted:
        raise SystemExit(130)


def render_again(out_dir: Path) -> None:
    """Summaries recomputed from the stored samples (same wall times), then load.json and load.md rewritten."""
    result = json.loads((out_dir / "load.json").read_text())
    samples = [Sample(**s) for s in result["samples"]]
    bot = [s for s in samples if s.channel != "llm"]
    for channel in ("all", "api", "chat"):
        chosen = bot if channel == "all" else [s for s in bot if s.channel == channel]
        result["bot"][channel] = summarize(chosen, result["bot"]["all"]["wall_s"])
    if result.get("llm"):
        result["llm"]["all"] = summarize([s for s in samples if s.channel == "llm"], result["llm"]["all"]["wall_s"])
    (out_dir / "load.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    write_markdown(out_dir / "load.md", result)


def require_llm_port(url: str) -> None:
    """Fail early when nothing listens at the LLM's address (its /v1/models may wait behind a long generation)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=5.0):
            return
    except OSError as exc:
        raise SystemExit(f"Nothing listens at {url} ({exc}). Start the LLM with `rag-bot llm serve`.") from None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _short_cmd(cmd: str) -> str:
    """The command line without the model's path, which says nothing here."""
    parts = cmd.split()
    return " ".join(Path(p).name if "/" in p and "://" not in p and i > 0 else p for i, p in enumerate(parts))[:200]


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    main()
