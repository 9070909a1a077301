#!/usr/bin/env bash
# Set up and run the whole test suite: real Postgres+pgvector, real embeddings, real llama.cpp and vLLM.
#   scripts/test.sh                 # everything (CI runs exactly this)
#   scripts/test.sh -m "not vllm"   # extra pytest arguments are passed through
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
step "Installing the project and test tools ..."
uv sync --locked --extra llamacpp --extra model-qwen-0p5b --extra model-qwen-1p5b --group dev
step "Setting up the vLLM engine (separate venv, cached after the first run) ..."
scripts/setup_vllm.sh
step "Running the tests ..."
set +e
uv run --no-sync pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here (the suite must run)." >&2
    exit 1
fi
exit "$status"
