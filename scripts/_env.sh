# Shared by scripts/run.sh and scripts/test.sh: find or install uv, and the build flags.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export UV_LINK_MODE=copy
# llama-cpp-python ships no wheels: build it portably (AVX2), so uv's cached wheel runs on any x86-64
# machine of this kind, not only on the CPU that compiled it.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
if ! command -v uv >/dev/null 2>&1; then
    if [ -x "$HOME/.local/bin/uv" ]; then
        export PATH="$HOME/.local/bin:$PATH"
    else
        echo "[setup] installing uv from PyPI ..."
        python3 -m pip install --quiet --user "uv==0.13.8"
        export PATH="$HOME/.local/bin:$PATH"
    fi
fi
step() { echo; echo "==> $*"; }
