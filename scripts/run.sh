#!/usr/bin/env bash
# Set up and run rag_bot on the embedded default: Postgres+pgvector, a local LLM, the Chainlit chat.
# First run: installs everything (builds llama.cpp once), fetches the weights, loads the demo company.
# Later runs reuse all of it. Ctrl-C stops every server this started.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
step "Installing the project (uv sync; the first run compiles llama.cpp, ~5 min) ..."
uv sync --locked --extra llamacpp --extra model-qwen-1p5b
if [ "${RAG_BOT_LLM_ENGINE:-}" = "vllm" ]; then
    step "Setting up vLLM ..."
    scripts/setup_vllm.sh
fi
step "Starting rag_bot ..."
exec uv run --no-sync rag-bot up "$@"
