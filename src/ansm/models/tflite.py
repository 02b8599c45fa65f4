"""Read a TensorFlow Lite model (``.tflite``) as plain data, and run small float graphs with torch ops.

**Reader.** A ``.tflite`` file is a FlatBuffers buffer (TensorFlow Lite's ``schema.fbs``, file identifier
``TFL3``). We read it with the pure-python ``flatbuffers`` package's :class:`flatbuffers.table.Table` API and
our own field table (the few tables and fields of ``schema.fbs`` we need, by their schema field ids) rather
than the ``tflite`` PyPI package: ``flatbuffers`` is a small, dependency-free, actively maintained runtime (the
one onnxruntime already pulls in), whereas ``tflite``'s generated code pins a schema snapshot and adds a second
package for what is ~100 lines of table lookups here. Reading is safe: the file is only ever decoded as
numbers and strings, nothing in it is executed, and any malformed offset or size becomes one
:class:`~ansm.errors.CheckpointError`.

:func:`read_tflite` returns a :class:`TFLiteModel`: the tensors (shape, dtype, quantisation, and for constant
tensors the raw array and its *dequantised* float32 value ``(q - zero_point) * scale``, per tensor or per
channel along ``quantized_dimension``; int32 biases dequantise the same way with their own scale) and the
operators in graph order (op name, input/output tensor indices, decoded builtin options).

**Interpreter.** :func:`run_tflite` executes a graph on float activations with torch ops (activation
quantisation is ignored: weights are dequantised, activations stay float32). 4-D activations are kept NCHW
internally (TFLite is NHWC); axes of CONCATENATION, ARG_MAX, MEAN, SOFTMAX and RESHAPE are mapped
accordingly. TF ``SAME`` padding is exact: ``pad = max((ceil(n/s) - 1) * s + (k - 1) * d + 1 - n, 0)``, the
smaller half before, the extra pixel after (bottom/right). RESIZE_BILINEAR honours ``align_corners``,
``half_pixel_centers`` and TF's legacy mode (``src = dst * in / out``, neither flag), which torch has no mode for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ansm.errors import CheckpointError

# --- schema.fbs facts -------------------------------------------------------------------------------------

#: TensorType enum -> numpy dtype (the ones a model file may store as constant data).
TENSOR_TYPES: dict[int, tuple[str, Any]] = {
    0: ("float32", np.float32), 1: ("float16", np.float16), 2: ("int32", np.int32), 3: ("uint8", np.uint8),
    4: ("int64", np.int64), 5: ("string", None), 6: ("bool", np.bool_), 7: ("int16", np.int16),
    8: ("complex64", np.complex64), 9: ("int8", np.int8), 10: ("float64", np.float64),
}

#: BuiltinOperator enum (the first 115 codes; more are only named by number).
_OP_NAMES = (
    "ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP FLOOR "
    "FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION LOGISTIC "
    "LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH "
    "SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER "
    "BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE "
    "BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM "
    "ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE "
    "TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK "
    "LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL "
    "FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL "
    "REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE"
).split()

_ACTIVATIONS = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_PADDING = {0: "SAME", 1: "VALID"}

# Builtin options, per operator: (field name, field id, kind, default). Kinds: i32, u8 (enum/byte), bool, f32,
# ivec (vector of int32). Field ids are the declaration order in schema.fbs.
_CONV = [("padding", 0, "u8", 0), ("stride_w", 1, "i32", 0), ("stride_h", 2, "i32", 0),
         ("fused_activation_function", 3, "u8", 0), ("dilation_w_factor", 4, "i32", 1),
         ("dilation_h_factor", 5, "i32", 1)]
_DWCONV = [("padding", 0, "u8", 0), ("stride_w", 1, "i32", 0), ("stride_h", 2, "i32", 0),
           ("depth_multiplier", 3, "i32", 0), ("fused_activation_function", 4, "u8", 0),
           ("dilation_w_factor", 5, "i32", 1), ("dilation_h_factor", 6, "i32", 1)]
_POOL = [("padding", 0, "u8", 0), ("stride_w", 1, "i32", 0), ("stride_h", 2, "i32", 0),
         ("filter_width", 3, "i32", 0), ("filter_height", 4, "i32", 0), ("fused_activation_function", 5, "u8", 0)]
_OPTIONS: dict[str, list[tuple[str, int, str, Any]]] = {
    "CONV_2D": _CONV,
    "DEPTHWISE_CONV_2D": _DWCONV,
    "AVERAGE_POOL_2D": _POOL,
    "MAX_POOL_2D": _POOL,
    "CONCATENATION": [("axis", 0, "i32", 0), ("fused_activation_function", 1, "u8", 0)],
    "ADD": [("fused_activation_function", 0, "u8", 0)],
    "SUB": [("fused_activation_function", 0, "u8", 0)],
    "MUL": [("fused_activation_function", 0, "u8", 0)],
    "SOFTMAX": [("beta", 0, "f32", 0.0)],
    "RESHAPE": [("new_shape", 0, "ivec", None)],
    "RESIZE_BILINEAR": [("align_corners", 2, "bool", False), ("half_pixel_centers", 3, "bool", False)],
    "RESIZE_NEAREST_NEIGHBOR": [("align_corners", 0, "bool", False), ("half_pixel_centers", 1, "bool", False)],
    "MEAN": [("keep_dims", 0, "bool", False)],
    "SQUEEZE": [("squeeze_dims", 0, "ivec", None)],
    "FULLY_CONNECTED": [("fused_activation_function", 0, "u8", 0)],
}


def op_name(code: int) -> str:
    return _OP_NAMES[code] if 0 <= code < len(_OP_NAMES) else f"BUILTIN_{code}"


# --- data model -------------------------------------------------------------------------------------------


@dataclass
class TFLiteTensor:
    """One tensor of the graph. ``data`` is the stored array (None for activations), ``value`` its float32
    dequantised form as a torch tensor in the file's layout (NHWC / [O,H,W,I] / [1,H,W,C])."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    zero_point: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    quantized_dimension: int = 0
    data: np.ndarray | None = None
    value: torch.Tensor | None = None

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def quantized(self) -> bool:
        return self.scale.size > 0 and self.dtype not in ("float32", "float16", "float64")

    def dequantize(self, q: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(q - zero_point) * scale`` as float32 (per tensor, or per channel along ``quantized_dimension``)."""
        q = torch.as_tensor(np.asarray(q)).to(torch.float64)
        if not self.quantized:
            return q.float()
        scale = torch.as_tensor(self.scale, dtype=torch.float64)
        zp = torch.as_tensor(self.zero_point if self.zero_point.size else np.zeros(1), dtype=torch.float64)
        if scale.numel() > 1:
            view = [1] * q.dim()
            view[self.quantized_dimension] = -1
            scale = scale.view(view)
            zp = zp.view(view) if zp.numel() > 1 else zp
        return ((q - zp) * scale).float()


@dataclass
class TFLiteOp:
    """One operator, in graph (execution) order."""

    index: int
    op: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any]


@dataclass
class TFLiteModel:
    """The first subgraph of a ``.tflite`` file."""

    path: str
    tensors: list[TFLiteTensor]
    ops: list[TFLiteOp]
    inputs: list[int]
    outputs: list[int]
    description: str = ""

    def const(self, index: int) -> torch.Tensor:
        t = self.tensors[index]
        if t.value is None:
            raise CheckpointError(f"{self.path}: tensor {index} ({t.name!r}) is not a constant")
        return t.value

    def summary(self) -> str:
        lines = []
        for op in self.ops:
            ins = ", ".join(f"{self.tensors[i].shape}" for i in op.inputs if i >= 0)
            outs = ", ".join(f"{self.tensors[i].shape}" for i in op.outputs)
            lines.append(f"{op.index:3d} {op.op:18s} {ins} -> {outs} {op.options}")
        return "\n".join(lines)


# --- flatbuffers access -----------------------------------------------------------------------------------


class _T:
    """A thin wrapper over flatbuffers.table.Table with schema-field-id accessors."""

    def __init__(self, buf: bytearray, pos: int) -> None:
        from flatbuffers import table

        self.t = table.Table(buf, pos)
        self.buf = buf

    def _off(self, fid: int) -> int:
        return self.t.Offset(4 + 2 * fid)

    def has(self, fid: int) -> bool:
        return self._off(fid) != 0

    def scalar(self, fid: int, kind: str, default: Any) -> Any:
        from flatbuffers import number_types as N

        o = self._off(fid)
        if not o:
            return default
        flags = {"i32": N.Int32Flags, "u32": N.Uint32Flags, "u8": N.Uint8Flags, "i8": N.Int8Flags,
                 "bool": N.BoolFlags, "f32": N.Float32Flags, "u64": N.Uint64Flags}[kind]
        return self.t.Get(flags, o + self.t.Pos)

    def string(self, fid: int) -> str:
        o = self._off(fid)
        return self.t.String(o + self.t.Pos).decode("utf-8", "replace") if o else ""

    def table(self, fid: int) -> "_T | None":
        o = self._off(fid)
        return _T(self.buf, self.t.Indirect(o + self.t.Pos)) if o else None

    def tables(self, fid: int) -> list["_T"]:
        o = self._off(fid)
        if not o:
            return []
        n, start = self.t.VectorLen(o), self.t.Vector(o)
        _check_range(self.buf, start, 4 * n)
        return [_T(self.buf, self.t.Indirect(start + 4 * i)) for i in range(n)]

    def array(self, fid: int, dtype: Any) -> np.ndarray:
        o = self._off(fid)
        if not o:
            return np.zeros(0, dtype)
        n, start = self.t.VectorLen(o), self.t.Vector(o)
        size = n * np.dtype(dtype).itemsize
        _check_range(self.buf, start, size)
        return np.frombuffer(self.buf, dtype=np.dtype(dtype).newbyteorder("<"), count=n, offset=start).copy()


def _check_range(buf: bytearray, start: int, size: int) -> None:
    if start < 0 or size < 0 or start + size > len(buf):
        raise ValueError(f"vector at {start} of {size} bytes runs past the end of the file ({len(buf)} bytes)")


def read_tflite(path: str | os.PathLike) -> TFLiteModel:
    """Read a ``.tflite`` file (first subgraph). Any unreadable or malformed file raises one CheckpointError."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot read TFLite model ({exc.strerror or exc})") from None
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise CheckpointError(f"{p}: not a TFLite model (no 'TFL3' FlatBuffers identifier)")
    try:
        return _parse(bytearray(raw), str(p))
    except CheckpointError:
        raise
    except Exception as exc:  # malformed offsets/sizes surface as struct/index/value errors
        raise CheckpointError(f"{p}: corrupt TFLite model ({type(exc).__name__}: {exc})") from None


def _parse(buf: bytearray, path: str) -> TFLiteModel:
    from flatbuffers import encode, packer

    root = _T(buf, encode.Get(packer.uoffset, buf, 0))
    # Model: 0 version, 1 operator_codes, 2 subgraphs, 3 description, 4 buffers.
    codes = []
    for oc in root.tables(1):  # OperatorCode: 0 deprecated_builtin_code (byte), 3 builtin_code (int32)
        codes.append(max(int(oc.scalar(0, "i8", 0)), int(oc.scalar(3, "i32", 0))))
    buffers = root.tables(4)  # Buffer: 0 data [ubyte] (1 offset, 2 size for >2 GB files, unsupported)
    subgraphs = root.tables(2)
    if not subgraphs:
        raise CheckpointError(f"{path}: TFLite model has no subgraph")
    sg = subgraphs[0]  # SubGraph: 0 tensors, 1 inputs, 2 outputs, 3 operators, 4 name
    tensors: list[TFLiteTensor] = []
    for i, tt in enumerate(sg.tables(0)):
        # Tensor: 0 shape [int], 1 type, 2 buffer (uint), 3 name, 4 quantization
        shape = tuple(int(s) for s in tt.array(0, np.int32))
        type_code = int(tt.scalar(1, "i8", 0))
        dname, npdtype = TENSOR_TYPES.get(type_code, (f"type{type_code}", None))
        t = TFLiteTensor(index=i, name=tt.string(3), shape=shape, dtype=dname)
        q = tt.table(4)  # QuantizationParameters: 0 min, 1 max, 2 scale [float], 3 zero_point [long], 6 q_dim
        if q is not None:
            t.scale = q.array(2, np.float32)
            t.zero_point = q.array(3, np.int64)
            t.quantized_dimension = int(q.scalar(6, "i32", 0))
        bidx = int(tt.scalar(2, "u32", 0))
        if 0 < bidx < len(buffers) and npdtype is not None:
            data = buffers[bidx].array(0, np.uint8)
            if data.size:
                count = int(np.prod(shape)) if shape else 1
                if data.size != count * np.dtype(npdtype).itemsize:
                    raise CheckpointError(
                        f"{path}: tensor {i} ({t.name!r}) holds {data.size} bytes, its shape {shape} x {dname} "
                        f"needs {count * np.dtype(npdtype).itemsize}")
                t.data = data.view(np.dtype(npdtype).newbyteorder("<")).reshape(shape)
                if t.quantized and t.scale.size not in (1, shape[t.quantized_dimension] if shape else 1):
                    raise CheckpointError(f"{path}: tensor {i} ({t.name!r}) has {t.scale.size} scales for {shape}")
                t.value = t.dequantize(t.data)
        tensors.append(t)
    ops: list[TFLiteOp] = []
    for i, ot in enumerate(sg.tables(3)):
        # Operator: 0 opcode_index, 1 inputs, 2 outputs, 3 builtin_options_type, 4 builtin_options
        oi = int(ot.scalar(0, "u32", 0))
        if oi >= len(codes):
            raise CheckpointError(f"{path}: operator {i} uses opcode {oi} of {len(codes)}")
        name = op_name(codes[oi])
        opts_t = ot.table(4)
        options: dict[str, Any] = {}
        for key, fid, kind, default in _OPTIONS.get(name, []):
            if kind == "ivec":
                options[key] = [int(v) for v in opts_t.array(fid, np.int32)] if opts_t is not None else default
            else:
                options[key] = opts_t.scalar(fid, kind, default) if opts_t is not None else default
        if "padding" in options:
            options["padding"] = _PADDING.get(int(options["padding"]), "SAME")
        if "fused_activation_function" in options:
            options["fused_activation_function"] = _ACTIVATIONS.get(int(options["fused_activation_function"]), "?")
        inputs = [int(v) for v in ot.array(1, np.int32)]
        outputs = [int(v) for v in ot.array(2, np.int32)]
        for v in inputs + outputs:
            if v >= len(tensors):
                raise CheckpointError(f"{path}: operator {i} ({name}) refers to tensor {v} of {len(tensors)}")
        ops.append(TFLiteOp(index=i, op=name, inputs=inputs, outputs=outputs, options=options))
    return TFLiteModel(path=path, tensors=tensors, ops=ops, inputs=[int(v) for v in sg.array(1, np.int32)],
                       outputs=[int(v) for v in sg.array(2, np.int32)], description=root.string(3))


# --- torch helpers shared with ansm.models.mobilenet ------------------------------------------------------


def same_pads(n: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding along one axis: (before, after); the extra pixel goes after (bottom/right)."""
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int] = (1, 1),
             value: float = 0.0) -> torch.Tensor:
    top, bottom = same_pads(x.shape[-2], kernel[0], stride[0], dilation[0])
    left, right = same_pads(x.shape[-1], kernel[1], stride[1], dilation[1])
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


def tf_resize_bilinear(x: torch.Tensor, size: tuple[int, int], align_corners: bool = False,
                       half_pixel_centers: bool = False) -> torch.Tensor:
    """TFLite RESIZE_BILINEAR on NCHW, including TF's legacy coordinate mode (neither flag set)."""
    if half_pixel_centers and not align_corners:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if align_corners:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    def axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(n_out, dtype=torch.float32, device=x.device) * (n_in / n_out)
        lo = src.floor().long().clamp(0, n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        return lo, hi, (src - lo.float()).to(x.dtype)

    y0, y1, wy = axis(x.shape[-2], size[0])
    x0, x1, wx = axis(x.shape[-1], size[1])
    rows = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def apply_activation(x: torch.Tensor, act: str | None) -> torch.Tensor:
    if act is None:
        return x
    if act == "RELU":
        return F.relu(x)
    if act == "RELU6":
        return F.relu6(x)
    if act == "RELU_N1_TO_1":
        return x.clamp(-1, 1)
    if act == "TANH":
        return torch.tanh(x)
    raise CheckpointError(f"unsupported fused activation {act}")


# --- interpreter ------------------------------------------------------------------------------------------

_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


def _axis(axis: int, ndim: int) -> int:
    axis = axis + ndim if axis < 0 else axis
    return _NHWC_TO_NCHW_AXIS[axis] if ndim == 4 else axis


def _to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def _from_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


def _conv(model: TFLiteModel, op: TFLiteOp, x: torch.Tensor, depthwise: bool) -> torch.Tensor:
    o = op.options
    w = model.const(op.inputs[1]).to(x)
    b = model.const(op.inputs[2]).to(x) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    if depthwise:  # [1, H, W, C*m] -> [C*m, 1, H, W], groups = C_in
        weight, groups = w.permute(3, 0, 1, 2).contiguous(), x.shape[1]
    else:  # [O, H, W, I] -> [O, I, H, W]
        weight, groups = w.permute(0, 3, 1, 2).contiguous(), 1
    stride, dil = (o["stride_h"], o["stride_w"]), (o["dilation_h_factor"], o["dilation_w_factor"])
    if o["padding"] == "SAME":
        x = pad_same(x, tuple(weight.shape[-2:]), stride, dil)
    y = F.conv2d(x, weight, b, stride=stride, dilation=dil, groups=groups)
    return apply_activation(y, o["fused_activation_function"])


def _pool(op: TFLiteOp, x: torch.Tensor, kind: str) -> torch.Tensor:
    o = op.options
    k, s = (o["filter_height"], o["filter_width"]), (o["stride_h"], o["stride_w"])
    if kind == "avg":
        if o["padding"] == "SAME":  # TF averages over the valid (unpadded) pixels only
            ones = torch.ones_like(x[:, :1])
            num = F.avg_pool2d(pad_same(x, k, s), k, s, divisor_override=1)
            den = F.avg_pool2d(pad_same(ones, k, s), k, s, divisor_override=1)
            y = num / den
        else:
            y = F.avg_pool2d(x, k, s)
    else:
        y = F.max_pool2d(pad_same(x, k, s, value=float("-inf")) if o["padding"] == "SAME" else x, k, s)
    return apply_activation(y, o["fused_activation_function"])


def run_tflite(model: TFLiteModel, *inputs: torch.Tensor) -> list[torch.Tensor]:
    """Run the graph on float inputs (4-D ones NCHW, already dequantised: e.g. [-1, 1] for MobileNet).

    Returns the graph outputs (4-D ones NCHW; integer outputs such as ARG_MAX as int64). Unsupported operators
    raise CheckpointError naming them.
    """
    if len(inputs) != len(model.inputs):
        raise CheckpointError(f"{model.path}: graph takes {len(model.inputs)} inputs, got {len(inputs)}")
    env: dict[int, torch.Tensor] = {i: x for i, x in zip(model.inputs, inputs)}
    last_use = {i: op.index for op in model.ops for i in op.inputs}
    outputs = set(model.outputs)

    def get(i: int) -> torch.Tensor:
        if i in env:
            return env[i]
        t = model.tensors[i]
        if t.value is None:
            raise CheckpointError(f"{model.path}: tensor {i} ({t.name!r}) read before it is computed")
        v = t.value
        return _from_nhwc(v) if v.dim() == 4 else v

    def ints(i: int) -> list[int]:
        t = model.tensors[i]
        if t.data is None:
            raise CheckpointError(f"{model.path}: tensor {i} ({t.name!r}) must be a constant")
        return [int(v) for v in np.asarray(t.data).reshape(-1)]

    for op in model.ops:
        name, o = op.op, op.options
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            y = _conv(model, op, get(op.inputs[0]), depthwise=name == "DEPTHWISE_CONV_2D")
        elif name in ("ADD", "SUB", "MUL"):
            a, b = get(op.inputs[0]), get(op.inputs[1])
            y = a + b if name == "ADD" else (a - b if name == "SUB" else a * b)
            y = apply_activation(y, o["fused_activation_function"])
        elif name == "AVERAGE_POOL_2D":
            y = _pool(op, get(op.inputs[0]), "avg")
        elif name == "MAX_POOL_2D":
            y = _pool(op, get(op.inputs[0]), "max")
        elif name == "CONCATENATION":
            xs = [get(i) for i in op.inputs]
            y = apply_activation(torch.cat(xs, dim=_axis(o["axis"], xs[0].dim())), o["fused_activation_function"])
        elif name == "RESHAPE":
            x = get(op.inputs[0])
            shape = o.get("new_shape") or (ints(op.inputs[1]) if len(op.inputs) > 1 else list(model.tensors[op.outputs[0]].shape))
            shape = list(shape)
            if shape and shape[0] in (1, -1) and model.tensors[op.inputs[0]].shape[:1] == (1,):
                shape[0] = x.shape[0]  # batch follows the input
            y = _from_nhwc(_to_nhwc(x).reshape(shape))
        elif name == "SQUEEZE":
            x = _to_nhwc(get(op.inputs[0]))
            dims = o.get("squeeze_dims") or [d for d, s in enumerate(x.shape) if s == 1]
            keep_dims = [s for d, s in enumerate(x.shape) if d not in {dd % x.dim() for dd in dims}]
            y = _from_nhwc(x.reshape(keep_dims))
        elif name == "SOFTMAX":
            x = get(op.inputs[0])
            y = torch.softmax(x * (o["beta"] or 1.0), dim=_axis(-1, x.dim()))
        elif name == "LOGISTIC":
            y = torch.sigmoid(get(op.inputs[0]))
        elif name in ("RELU", "RELU6", "TANH", "RELU_N1_TO_1"):
            y = apply_activation(get(op.inputs[0]), name)
        elif name in ("ARG_MAX", "ARG_MIN"):  # on TFLite's own (NHWC) axes; the result is not 4-D
            x = _to_nhwc(get(op.inputs[0]))
            ax = ints(op.inputs[1])[0]
            y = x.argmax(dim=ax) if name == "ARG_MAX" else x.argmin(dim=ax)
        elif name == "MEAN":
            x = get(op.inputs[0])
            axes = sorted({_axis(a, x.dim()) for a in ints(op.inputs[1])})
            y = x.mean(dim=axes, keepdim=True)
            if not o["keep_dims"]:
                y = _from_nhwc(_to_nhwc(y).reshape([s for d, s in enumerate(_to_nhwc(x).shape)
                                                     if d not in {a % x.dim() for a in ints(op.inputs[1])}]))
        elif name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
            x = get(op.inputs[0])
            size = tuple(ints(op.inputs[1]))
            if name == "RESIZE_BILINEAR":
                y = tf_resize_bilinear(x, size, o["align_corners"], o["half_pixel_centers"])
            else:
                y = F.interpolate(x, size=size, mode="nearest")
        elif name in ("QUANTIZE", "DEQUANTIZE"):
            y = get(op.inputs[0])
        elif name == "PAD":
            x = get(op.inputs[0])
            p = np.asarray(model.tensors[op.inputs[1]].data).reshape(-1, 2)
            if x.dim() == 4:
                p = p[[0, 3, 1, 2]]
            y = F.pad(x, [int(v) for pair in p[::-1] for v in pair])
        else:
            raise CheckpointError(f"{model.path}: TFLite operator {name} (op {op.index}) is not supported")
        env[op.outputs[0]] = y
        for i in op.inputs:  # drop activations nobody reads again (memory on big inputs)
            if last_use.get(i) == op.index and i not in outputs:
                env.pop(i, None)
    return [get(i) for i in model.outputs]


def quant_params(model: TFLiteModel, index: int) -> tuple[float, int]:
    """(scale, zero_point) of a per-tensor-quantised tensor (e.g. the uint8 input)."""
    t = model.tensors[index]
    if t.scale.size != 1:
        raise CheckpointError(f"{model.path}: tensor {index} ({t.name!r}) is not per-tensor quantised")
    return float(t.scale[0]), int(t.zero_point[0]) if t.zero_point.size else 0


__all__ = [
    "TFLiteModel",
    "TFLiteOp",
    "TFLiteTensor",
    "read_tflite",
    "run_tflite",
    "same_pads",
    "pad_same",
    "tf_resize_bilinear",
    "quant_params",
]
