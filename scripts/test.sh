#!/usr/bin/env bash
# Set up and run the whole test suite: real Postgres+pgvector, real embeddings, real llama.cpp and vLLM.
#   scripts/test.sh                 # everything (CI runs exactly this)
#   scripts/test.sh -m "not vllm"   # extra pytest arguments are passed through
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
step "Installing the project and test tools ..."
uv sync --locked --extra llamacpp --extra model-qwen-0p5b --extra model-qwen-1p5b --group dev
step "Setting up the vLLM engine (separate venv, cached after the first run) ..."
scripts/setup_vllm.sh
step "Checking for Chromium and nginx (tests/test_browser.py drives Chromium, tests/test_replicas.py proxies with nginx) ..."
as_root=()
can_install() {
    # apt-get is there and we are root or have passwordless sudo (then as_root=(sudo -n)).
    # Explains and returns 1 otherwise; $1 names what is missing, $2 what will be skipped.
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "No $1 and no apt-get to install it: $2 will be skipped." >&2
        return 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            as_root=(sudo -n)
        else
            echo "No $1, and installing it needs root or passwordless sudo: $2 will be skipped." >&2
            return 1
        fi
    fi
}
apt_install() {
    # apt_install PACKAGE WHAT: Debian's PACKAGE, without recommends; WHAT is skipped when that fails.
    echo "Installing Debian's $1 with apt-get ..."
    if ! { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
           "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 \
               --no-install-recommends "$1" >/dev/null; }; then
        echo "apt-get could not install $1: $2 will be skipped." >&2
        return 1
    fi
}
ensure_chromium() {
    # Debian's package, installed when missing. Without it the browser tests are skipped (pytest names
    # the missing binary); RAG_BOT_CHROMIUM points them at another Chromium.
    local chromium="${RAG_BOT_CHROMIUM:-/usr/bin/chromium}"
    if [ -x "$chromium" ]; then
        echo "Chromium: $chromium"
        return
    fi
    if [ "$chromium" != /usr/bin/chromium ]; then
        echo "RAG_BOT_CHROMIUM=$chromium is not an executable: the browser tests will be skipped." >&2
        return
    fi
    can_install "Chromium at $chromium" "the browser tests" || return 0
    apt_install chromium "the browser tests" || true
}
ensure_nginx() {
    # Debian's package, installed when missing; the test runs its own nginx (deploy/nginx.conf) in a
    # temporary folder. Without it the replica test is skipped; RAG_BOT_NGINX points it at another nginx.
    local nginx="${RAG_BOT_NGINX:-}"
    if [ -n "$nginx" ]; then
        if [ -x "$nginx" ]; then
            echo "nginx: $nginx"
        else
            echo "RAG_BOT_NGINX=$nginx is not an executable: the replica test will be skipped." >&2
        fi
        return
    fi
    nginx="$(command -v nginx || true)"
    if [ -n "$nginx" ] || [ -x /usr/sbin/nginx ]; then
        echo "nginx: ${nginx:-/usr/sbin/nginx}"
        return
    fi
    can_install "nginx" "the replica test" || return 0
    apt_install nginx "the replica test" || return 0
    # On a host with systemd the package starts its own server on port 80; the tests do not use it.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
        "${as_root[@]}" systemctl disable --now nginx >/dev/null 2>&1 || true
    fi
}
ensure_chromium
ensure_nginx
step "Type-checking with mypy (pyproject.toml [tool.mypy]) ..."
uv run --no-sync mypy
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
