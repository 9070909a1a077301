"""The e5 encoder as an int8 ONNX graph run by onnxruntime (FastE5's default backend).

Why: the encoder's time is in its matrix products, and this CPU has AVX-512 VNNI, which multiplies
int8 several times faster than float32. onnxruntime's dynamic quantization runs every weight
product as int8 x int8 (weights per output channel, activations per tensor, quantized on the fly):
about 3.3x less CPU per chunk than the float32 numpy encoder.

Per-tensor activation ranges are what costs accuracy: a few channels (mostly at <s> and </s>) are
10-30x larger than the rest, and cost up to 0.012 MRR on XQuAD when left as they are. So the graph is
"smoothed" first (SmoothQuant, Xiao et al. 2023): each product's input channel j is divided by
s_j and the weight row j multiplied by it, which leaves the float result unchanged and moves the
outliers into the weights, which are quantized per channel anyway. s_j = a_j^0.7 / w_j^0.3 from the
largest |activation| a_j seen on a few built-in ru/en texts (float32 run of the same graph) and the
largest |weight| w_j of that row. That raises the cosine to the float32 encoder on XQuAD texts
from 0.9966 to 0.9988 on average (lowest 0.995 to 0.997) and brings retrieval back to the float32
encoder's, at no speed cost (the divisions are one elementwise Mul per product).

The graph is written here with `onnx.helper` from FastE5's float32 weights (nothing is downloaded),
calibrated, quantized with `onnxruntime.quantization.quantize_dynamic` and cached beside those
weights; later loads only open the cached file, so `onnx` is needed only to build it.

One sequence per run, never a padded batch: activations are quantized per tensor, so a text padded
into a batch with others would get a slightly different vector than alone; unpadded, every text's
vector is the same whatever it is embedded with, no attention mask is needed, and the activations
stay in cache (measured faster than padded batches here). Parallelism is one run per worker thread,
each single-threaded (onnxruntime releases the GIL while it runs): on 2 cores that measured 37
chunks/s against 29 for one session with two intra-op threads, which synchronise at every op.
onnxruntime's transformer optimizer (model_type "bert") was tried and left out: it finds no
attention to fuse in this graph and its fused GELU made runs 5% slower; hand-written fused ops
(Attention/QAttention, MultiHeadAttention) were also slower than these plain ops.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

# Bump when the graph, the calibration or the quantization below changes: the cached file's name
# carries it, so an old file is simply not used.
GRAPH_VERSION = 2
_OPSET = 20  # Gelu with approximate="tanh" needs opset 20
_SMOOTH_ALPHA = 0.7  # measured best of 0.5-0.9 on XQuAD texts

# SmoothQuant calibration: the outlier channels are the model's, not the text's, so a few varied
# texts suffice (calibrating on these or on XQuAD paragraphs gave the same cosine on XQuAD).
CALIBRATION_TEXTS = (
    "query: What is the capital of Poland?",
    "query: Сколько стоит доставка заказа в Москву?",
    "query: how to reset the password for my account",
    "query: Какие документы нужны для возврата товара?",
    "passage: Warsaw is the capital and largest city of Poland. It stands on the Vistula river in east-central "
    "Poland, and its population is officially estimated at 1.86 million residents within a greater metropolitan "
    "area of 3.1 million residents, which makes Warsaw the 7th most-populous capital city in the European Union.",
    "passage: Фотосинтез — процесс образования органических веществ из углекислого газа и воды на свету при "
    "участии фотосинтетических пигментов. У растений он идёт в хлоропластах; побочный продукт — кислород, "
    "который выделяется в атмосферу.",
    "passage: Refunds are issued within 14 days of receiving the returned item. Shipping costs are not "
    'refundable unless the product arrived damaged (see section 4.2, "Damaged goods").',
    "passage: Выручка компании за третий квартал 2025 года составила 12,4 млн руб., что на 8% больше, чем годом "
    "ранее; основной рост дали продажи в Санкт-Петербурге и онлайн-канал.",
    "passage: The Panthers defense gave up just 308 points, ranking sixth in the league, while also leading the "
    "NFL in interceptions with 24 and boasting four Pro Bowl selections.",
    "passage: Чтобы подключить принтер, откройте «Параметры» → «Устройства», нажмите «Добавить» и выберите модель "
    "из списка. Если принтера нет в списке, установите драйвер с сайта производителя.",
)


@dataclass(frozen=True)
class EncoderShape:
    """The sizes the graph needs (FastE5's model header)."""

    hidden: int
    heads: int
    layers: int
    eps: float


def build_graph(
    w: dict[str, np.ndarray],
    shape: EncoderShape,
    smooth: dict[str, np.ndarray] | None = None,
    probe: bool = False,
) -> onnx.ModelProto:
    """Float32 ONNX graph of FastE5's encoder for one unpadded sequence.

    Input `emb` (L, hidden): word + position + type embeddings (the lookup stays in numpy, where the
    word table stays 4-bit). Output `pooled` (1, hidden): mean over the tokens, not yet L2-normalised.
    Same computation as FastE5's numpy forward, with the 1/sqrt(head_dim) scale folded into Q.
    `smooth` maps a product ("l3.fo") to its SmoothQuant scales; `probe` adds each product's input
    as an extra output named like the product, for calibration.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    H, NH = shape.hidden, shape.heads
    hd = H // NH
    nodes: list[Any] = []
    inits: list[Any] = []
    probes: list[Any] = []
    count = 0

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=arr.dtype), name))
        return name

    def nodes_out(op: str, inputs: list[str], n_out: int, **attrs: Any) -> list[str]:
        nonlocal count
        count += 1
        outs = [f"{op}_{count}_{k}" for k in range(n_out)]
        nodes.append(helper.make_node(op, inputs, outs, name=f"{op}_{count}", **attrs))
        return outs

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        return nodes_out(op, inputs, 1, **attrs)[0]

    def linear(x: str, name: str, weight: np.ndarray, bias: np.ndarray) -> str:
        if probe:
            nodes.append(helper.make_node("Identity", [x], [name], name=name + ".probe"))
            probes.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["L", weight.shape[0]]))
        if smooth is not None and name in smooth:
            s = smooth[name].astype(np.float32)
            x = node("Mul", [x, const(name + ".smooth", (1.0 / s).astype(np.float32))])
            weight = (weight * s[:, None]).astype(np.float32)
        return node("Add", [node("MatMul", [x, const(name + ".w", weight)]), const(name + ".b", bias)])

    def layernorm(x: str, name: str) -> str:
        return node(
            "LayerNormalization",
            [x, const(name + ".w", w[name + ".w"]), const(name + ".b", w[name + ".b"])],
            axis=-1,
            epsilon=shape.eps,
        )

    heads_shape = const("shape.heads", np.array([-1, 3 * NH, hd], np.int64))
    flat_shape = const("shape.flat", np.array([-1, H], np.int64))
    scale = np.float32(1.0 / np.sqrt(hd))
    x = layernorm("emb", "emb.ln")
    for li in range(shape.layers):
        p = f"l{li}."
        wqkv, bqkv = w[p + "qkv.w"].copy(), w[p + "qkv.b"].copy()
        wqkv[:, :H] *= scale
        bqkv[:H] *= scale
        qkv = linear(x, p + "qkv", wqkv, bqkv)  # (L, 3H)
        qkv = node("Transpose", [node("Reshape", [qkv, heads_shape])], perm=[1, 0, 2])  # (3NH, L, hd)
        q, k, v = nodes_out("Split", [qkv], 3, axis=0, num_outputs=3)  # (NH, L, hd) each
        att = node("Softmax", [node("MatMul", [q, node("Transpose", [k], perm=[0, 2, 1])])], axis=-1)
        ctx = node("Reshape", [node("Transpose", [node("MatMul", [att, v])], perm=[1, 0, 2]), flat_shape])
        x = layernorm(node("Add", [linear(ctx, p + "ao", w[p + "ao.w"], w[p + "ao.b"]), x]), p + "aln")
        mid = node("Gelu", [linear(x, p + "fi", w[p + "fi.w"], w[p + "fi.b"])], approximate="tanh")
        x = layernorm(node("Add", [linear(mid, p + "fo", w[p + "fo.w"], w[p + "fo.b"]), x]), p + "oln")
    nodes.append(helper.make_node("ReduceMean", [x, const("axis0", np.array([0], np.int64))], ["pooled"], keepdims=1))
    graph = helper.make_graph(
        nodes,
        "multilingual-e5-small",
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["L", H])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [1, H]), *probes],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="rag_bot")
    model.ir_version = 10  # onnxruntime 1.32 reads up to 11; pin what the graph needs
    onnx.checker.check_model(model)
    return model


def smoothing_scales(
    w: dict[str, np.ndarray], shape: EncoderShape, calibration: list[np.ndarray]
) -> dict[str, np.ndarray]:
    """SmoothQuant scales per product from the float32 graph's activations on `calibration` inputs."""
    import onnxruntime as ort

    probe = build_graph(w, shape, probe=True)
    names = [o.name for o in probe.graph.output[1:]]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    act: dict[str, np.ndarray] = {}
    for emb in calibration:
        for name, value in zip(names, session.run(names, {"emb": emb}), strict=True):
            m = np.abs(value).max(axis=0)
            act[name] = np.maximum(act[name], m) if name in act else m
    scales = {}
    for name in names:
        a = np.maximum(act[name], 1e-5)
        wmax = np.maximum(np.abs(w[name + ".w"]).max(axis=1), 1e-5)
        scales[name] = np.clip(a**_SMOOTH_ALPHA / wmax ** (1 - _SMOOTH_ALPHA), 1e-2, 1e2).astype(np.float32)
    return scales


def quantize_int8(model: onnx.ModelProto, out_path: Path) -> None:
    """int8 weights per output channel (QInt8: the u8 x s8 VNNI path; QUInt8 weights measured 1.6x
    slower; per-tensor weights lost accuracy) and per-tensor dynamic activations; written atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = out_path.with_name(f"{out_path.stem}.tmp{os.getpid()}.onnx")
    root = logging.getLogger()
    root.addFilter(_quiet_quantizer)
    try:
        quantize_dynamic(
            model,
            tmp,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
        os.replace(tmp, out_path)
    finally:
        root.removeFilter(_quiet_quantizer)
        tmp.unlink(missing_ok=True)


def _quiet_quantizer(record: logging.LogRecord) -> bool:
    """The quantizer logs advice and per-tensor notes on the root logger; they mean nothing here."""
    return "onnxruntime" not in record.pathname


def load_int8_encoder(
    folder: Path, w: dict[str, np.ndarray], shape: EncoderShape, embed_input: Callable[[str], np.ndarray]
) -> OnnxEncoder:
    """The int8 encoder from its cached graph in `folder` (FastE5's cache-keyed weights folder),
    built on first use and rebuilt if the cached file does not load (e.g. a truncated write).

    `embed_input` maps a text to the graph's input (L, hidden), for the calibration texts.
    """
    path = Path(folder) / f"encoder-v{GRAPH_VERSION}.int8.onnx"
    if path.is_file():
        try:
            return OnnxEncoder(path)
        except ImportError:
            raise  # no onnxruntime: the file is fine, keep it
        except Exception:  # noqa: BLE001 - onnxruntime raises its own types; rebuild below
            path.unlink(missing_ok=True)
    calibration = [embed_input(t) for t in CALIBRATION_TEXTS]
    quantize_int8(build_graph(w, shape, smooth=smoothing_scales(w, shape, calibration)), path)
    return OnnxEncoder(path)


class OnnxEncoder:
    """An onnxruntime session over the int8 graph: one unpadded sequence per `run` call."""

    def __init__(self, model_path: Path) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        # Single-threaded runs; FastE5's worker threads run sequences side by side.
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self._session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])

    def run(self, emb: np.ndarray) -> np.ndarray:
        """(L, hidden) embeddings -> (hidden,) mean-pooled output (not normalised)."""
        return self._session.run(None, {"emb": np.ascontiguousarray(emb, dtype=np.float32)})[0][0]
