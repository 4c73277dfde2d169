"""Run a TensorFlow.js graph model (``model.json`` + weight shards) in plain torch.

The converter reads the graph once, folds every node whose inputs are constants, and
compiles the rest into a flat list of torch calls. Constants become module buffers, so
``.to(device)`` and autocast work as for any ``nn.Module``. Two rewrites keep the program
valid at any batch size and input resolution, not only the one the graph was exported at:
a ``Reshape`` that merges trailing dimensions becomes ``flatten``, and a ``ResizeBilinear``
to a fixed size becomes the equivalent scale factor. Anything the converter cannot express
raises ``UnsupportedGraphError`` at load time rather than misbehaving later.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
# Shard storage types of quantized weights (tfjs-converter's --quantize_* options).
_STORED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


class UnsupportedGraphError(ValueError):
    """The graph uses an op or a pattern this converter does not translate."""


def load_weights(model_json: dict, weights_dir: Path) -> dict[str, np.ndarray]:
    """Decode every weight of the manifest into a named numpy array."""
    arrays: dict[str, np.ndarray] = {}
    for group in model_json["weightsManifest"]:
        blob = b"".join((weights_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            quant = spec.get("quantization")
            stored = np.dtype(_STORED[quant["dtype"]] if quant else _DTYPES[spec["dtype"]])
            count = int(np.prod(spec["shape"], dtype=np.int64))
            arr = np.frombuffer(blob, dtype=stored, count=count, offset=offset)
            offset += count * stored.itemsize
            if quant and quant["dtype"] != "float16":
                # Affine quantization: value = q * scale + min.
                arr = arr.astype(np.float32) * quant["scale"] + quant["min"]
            arrays[spec["name"]] = arr.astype(_DTYPES[spec["dtype"]]).reshape(spec["shape"])
        if offset != len(blob):
            raise UnsupportedGraphError(f"weights use {offset} of {len(blob)} bytes")
    return arrays


def _attr(node: dict, key: str, default=None):
    """Decode one attribute of a GraphDef node from its protobuf-JSON form."""
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "list" in value:
        items = value["list"].get("i") or value["list"].get("f") or []
        return [int(v) if isinstance(v, str) else v for v in items]
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    return value


def _ref(name: str) -> tuple[str, int]:
    """Split a tensor reference ``node:k`` into (node, output index)."""
    node, _, index = name.partition(":")
    return node, int(index or 0)


@dataclass
class _Step:
    fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]]
    inputs: list[tuple[str, int]]
    name: str


class TfjsGraphModule(nn.Module):
    """A TF.js graph as a torch module: ``forward(x) -> tuple`` of the graph's outputs."""

    def __init__(self, model_json: dict, weights: dict[str, np.ndarray]):
        super().__init__()
        graph = model_json["modelTopology"]["node"]
        signature = model_json.get("signature", {})
        self.output_names = sorted(
            (_ref(o["name"])[0] for o in signature.get("outputs", {}).values()),
            key=lambda n: (len(n), n),
        )
        placeholders = [n for n in graph if n["op"] == "Placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedGraphError("exactly one input placeholder is supported")
        self.input_name = placeholders[0]["name"]
        self.input_shape = [
            int(d["size"]) for d in _attr(placeholders[0], "shape")["shape"]["dim"]
        ]
        self._consts: dict[str, np.ndarray] = dict(weights)
        self._buffers_by_id: dict[int, str] = {}
        self._steps: list[_Step] = []
        # Static shapes at the exported input size guide the rewrites; they are checked
        # against, never baked in.
        self._shapes: dict[tuple[str, int], tuple[int, ...]] = {
            (self.input_name, 0): tuple(self.input_shape)
        }
        self._compile(graph)

    # -- compilation ---------------------------------------------------------------

    def _compile(self, graph: list[dict]) -> None:
        by_name = {n["name"]: n for n in graph}
        self._nodes = by_name
        self._consumers: dict[tuple[str, int], list[str]] = {}
        for n in graph:
            for i in n.get("input", []):
                if not i.startswith("^"):
                    self._consumers.setdefault(_ref(i), []).append(n["name"])
        self._step_of: dict[str, int] = {}
        self._absorbed: dict[str, str] = {}  # bias Add node -> conv that absorbed it
        done: set[str] = {self.input_name}
        done.update(n["name"] for n in graph if n["op"] == "Const")
        for name in self._consts:
            done.add(name)

        def visit(name: str, trail: tuple[str, ...] = ()) -> None:
            if name in done:
                return
            if name in trail:
                raise UnsupportedGraphError(f"cycle through {name!r}")
            node = by_name[name]
            for inp in node.get("input", []):
                if not inp.startswith("^"):
                    visit(_ref(inp)[0], trail + (name,))
            self._compile_node(node)
            done.add(name)

        for out in self.output_names:
            visit(out)
        self._steps = [s for s in self._steps if s is not None]

    def _sole_producer(self, ref: tuple[str, int], op: str) -> dict | None:
        """The node of type ``op`` making ``ref``, if nothing else reads ``ref``."""
        if ref[1] != 0 or ref[0] not in self._step_of:
            return None
        node = self._nodes[ref[0]]
        if node["op"] != op or len(self._consumers.get(ref, [])) != 1:
            return None
        return node

    def _drop(self, node: dict) -> None:
        self._steps[self._step_of.pop(node["name"])] = None

    def _is_const(self, ref: tuple[str, int]) -> bool:
        return ref[1] == 0 and ref[0] in self._consts

    def _const(self, ref: tuple[str, int]) -> np.ndarray:
        return self._consts[ref[0]]

    def _buffer(self, array: np.ndarray | torch.Tensor) -> str:
        """Register a constant tensor as a buffer and return its attribute name."""
        tensor = torch.as_tensor(np.ascontiguousarray(array))
        name = f"const_{len(self._buffers_by_id)}"
        self.register_buffer(name, tensor, persistent=False)
        self._buffers_by_id[len(self._buffers_by_id)] = name
        return name

    def _compile_node(self, node: dict) -> None:
        op, name = node["op"], node["name"]
        inputs = [_ref(i) for i in node.get("input", []) if not i.startswith("^")]
        if all(self._is_const(i) for i in inputs) and op in _FOLDABLE:
            self._consts[name] = _FOLDABLE[op]([self._const(i) for i in inputs], node)
            return
        builder = _BUILDERS.get(op)
        if builder is None:
            raise UnsupportedGraphError(f"op {op!r} (node {name!r}) is not supported")
        fn, dynamic, out_shapes = builder(self, node, inputs)
        self._step_of[name] = len(self._steps)
        self._steps.append(_Step(fn, dynamic, name))
        for k, shape in enumerate(out_shapes):
            self._shapes[(name, k)] = tuple(shape)

    def shape_of(self, ref: tuple[str, int]) -> tuple[int, ...]:
        if self._is_const(ref):
            return tuple(self._const(ref).shape)
        return self._shapes[ref]

    # -- execution -----------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values: dict[tuple[str, int], torch.Tensor] = {(self.input_name, 0): x}
        for step in self._steps:
            out = step.fn(*(values[i] for i in step.inputs))
            if isinstance(out, tuple):
                for k, t in enumerate(out):
                    values[(step.name, k)] = t
            else:
                values[(step.name, 0)] = out
        return tuple(values[(n, 0)] for n in self.output_names)


def _pad_args(paddings: np.ndarray) -> list[int]:
    """TF paddings [[before, after], ...] → torch F.pad order (last dim first)."""
    out: list[int] = []
    for before, after in paddings[::-1].tolist():
        out += [int(before), int(after)]
    return out


def _fold_sparse_to_dense(args: Sequence[np.ndarray], node: dict) -> np.ndarray:
    indices, shape, values, default = args
    dense = np.full(shape.astype(np.int64), default, dtype=values.dtype)
    indices = indices.reshape(-1, dense.ndim)
    values = np.broadcast_to(values, (len(indices),))
    for idx, v in zip(indices.tolist(), values.tolist(), strict=True):
        dense[tuple(idx)] = v
    return dense


_FOLDABLE: dict[str, Callable[[Sequence[np.ndarray], dict], np.ndarray]] = {
    "Identity": lambda a, n: a[0],
    "Add": lambda a, n: a[0] + a[1],
    "AddV2": lambda a, n: a[0] + a[1],
    "SparseToDense": _fold_sparse_to_dense,
}


def _fold_conv_input(m: TfjsGraphModule, x: tuple[str, int]):
    """Find the NCHW tensor behind ``Pad -> Transpose(NCHW->NHWC) -> conv``.

    The exported graph wraps every convolution in layout transposes and an explicit zero
    pad. Reading the NCHW tensor directly and letting the convolution pad is the same
    arithmetic with two fewer passes over memory. Returns (NCHW ref, (pad_h, pad_w)) or
    None when the pattern does not match exactly.
    """
    transpose = m._sole_producer(x, "Transpose")
    if transpose is None:
        return None
    t_in, perm_ref = (_ref(i) for i in transpose["input"])
    if m._const(perm_ref).tolist() != [0, 2, 3, 1]:
        return None
    m._drop(transpose)
    pad = m._sole_producer(t_in, "Pad")
    if pad is not None:
        p_in, pads_ref = (_ref(i) for i in pad["input"])
        pads = m._const(pads_ref).tolist()
        if pads[0] == [0, 0] and pads[1] == [0, 0] and pads[2][0] == pads[2][1] \
                and pads[3][0] == pads[3][1]:
            m._drop(pad)
            return p_in, (int(pads[2][0]), int(pads[3][0]))
    return t_in, (0, 0)


def _bias_after(m: TfjsGraphModule, conv_name: str, channels: int):
    """The constant per-channel bias added right after a convolution, if any."""
    readers = m._consumers.get((conv_name, 0), [])
    if len(readers) != 1:
        return None
    add = m._nodes[readers[0]]
    if add["op"] not in ("Add", "AddV2"):
        return None
    refs = [_ref(i) for i in add["input"]]
    other = refs[1] if refs[0] == (conv_name, 0) else refs[0]
    if not m._is_const(other) or m._const(other).shape != (channels,):
        return None
    m._absorbed[add["name"]] = conv_name
    return m._const(other)


def _build_conv2d(m: TfjsGraphModule, node, inputs):
    x, w = inputs
    if _attr(node, "data_format", "NHWC") != "NHWC" or _attr(node, "padding") != "VALID":
        raise UnsupportedGraphError(f"Conv2D {node['name']!r}: only NHWC VALID")
    if any(d != 1 for d in _attr(node, "dilations", [1, 1, 1, 1])):
        raise UnsupportedGraphError(f"Conv2D {node['name']!r}: dilation")
    filt = m._const(w)  # [kh, kw, in/groups, out]
    n, h, wd, c = m.shape_of(x)
    groups = c // filt.shape[2]
    stride = tuple(_attr(node, "strides")[1:3])
    weight = m._buffer(filt.transpose(3, 2, 0, 1))
    bias_value = _bias_after(m, node["name"], filt.shape[3])
    bias = m._buffer(bias_value) if bias_value is not None else None
    oh = (h - filt.shape[0]) // stride[0] + 1
    ow = (wd - filt.shape[1]) // stride[1] + 1
    out_shape = [(n, oh, ow, filt.shape[3])]
    folded = _fold_conv_input(m, x)

    def params():
        return getattr(m, weight), (getattr(m, bias) if bias else None)

    if folded is None:
        def conv(t):
            y = F.conv2d(t.permute(0, 3, 1, 2), *params(), stride=stride, groups=groups)
            return y.permute(0, 2, 3, 1)

        return conv, [x], out_shape

    src, padding = folded

    def conv_nchw(t):
        y = F.conv2d(t, *params(), stride=stride, padding=padding, groups=groups)
        return y.permute(0, 2, 3, 1)

    return conv_nchw, [src], out_shape


def _binary(fn):
    def build(m: TfjsGraphModule, node, inputs):
        a, b = inputs
        if node["name"] in m._absorbed:
            conv = (m._absorbed[node["name"]], 0)
            return (lambda t: t), [conv], [m.shape_of(conv)]
        shapes = [m.shape_of(a), m.shape_of(b)]
        out = tuple(np.broadcast_shapes(*shapes))
        if m._is_const(b):
            bname = m._buffer(m._const(b))
            return (lambda t: fn(t, getattr(m, bname))), [a], [out]
        if m._is_const(a):
            aname = m._buffer(m._const(a))
            return (lambda t: fn(getattr(m, aname), t)), [b], [out]
        return fn, [a, b], [out]

    return build


def _build_pad(m: TfjsGraphModule, node, inputs):
    x, p = inputs[0], inputs[1]
    value = float(m._const(inputs[2])) if len(inputs) > 2 else 0.0
    pads = m._const(p)
    args = _pad_args(pads)
    shape = [s + int(a) + int(b) for s, (a, b) in zip(m.shape_of(x), pads.tolist(), strict=True)]
    return (lambda t: F.pad(t, args, value=value)), [x], [shape]


def _build_transpose(m: TfjsGraphModule, node, inputs):
    x, p = inputs
    perm = [int(v) for v in m._const(p).tolist()]
    shape = [m.shape_of(x)[i] for i in perm]
    return (lambda t: t.permute(*perm)), [x], [shape]


def _build_leaky_relu(m: TfjsGraphModule, node, inputs):
    alpha = _attr(node, "alpha", 0.2)
    return (lambda t: F.leaky_relu(t, alpha)), inputs[:1], [m.shape_of(inputs[0])]


def _build_max_pool(m: TfjsGraphModule, node, inputs):
    if _attr(node, "data_format", "NHWC") != "NHWC" or _attr(node, "padding") != "VALID":
        raise UnsupportedGraphError(f"MaxPool {node['name']!r}: only NHWC VALID")
    k = tuple(_attr(node, "ksize")[1:3])
    s = tuple(_attr(node, "strides")[1:3])
    n, h, w, c = m.shape_of(inputs[0])

    def pool(t):
        return F.max_pool2d(t.permute(0, 3, 1, 2), k, s).permute(0, 2, 3, 1)

    shape = (n, (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1, c)
    return pool, inputs[:1], [shape]


def _build_concat(m: TfjsGraphModule, node, inputs):
    *parts, axis_ref = inputs
    axis = int(m._const(axis_ref))
    shapes = [m.shape_of(p) for p in parts]
    axis %= len(shapes[0])
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return (lambda *ts: torch.cat(ts, dim=axis)), parts, [out]


def _build_resize_bilinear(m: TfjsGraphModule, node, inputs):
    x, size_ref = inputs
    if _attr(node, "align_corners", False) or not _attr(node, "half_pixel_centers", False):
        raise UnsupportedGraphError("ResizeBilinear: only half_pixel_centers without corners")
    n, h, w, c = m.shape_of(x)
    oh, ow = (int(v) for v in m._const(size_ref).tolist())
    # Keep the ratio, not the size: the same graph then serves any input resolution. With
    # half-pixel centres, TF and torch (align_corners=False, explicit size) sample alike.
    ratio = (Fraction(oh, h), Fraction(ow, w))

    def resize(t):
        size = [d * r for d, r in zip(t.shape[1:3], ratio, strict=True)]
        if any(s.denominator != 1 for s in size):
            raise ValueError(f"input size {tuple(t.shape[1:3])} does not scale by {ratio}")
        y = F.interpolate(t.permute(0, 3, 1, 2), size=[int(s) for s in size],
                          mode="bilinear", align_corners=False)
        return y.permute(0, 2, 3, 1)

    return resize, [x], [(n, oh, ow, c)]


def _build_split_v(m: TfjsGraphModule, node, inputs):
    x, sizes_ref, axis_ref = inputs
    sizes = [int(v) for v in m._const(sizes_ref).tolist()]
    shape = m.shape_of(x)
    axis = int(m._const(axis_ref)) % len(shape)
    if -1 in sizes:
        sizes[sizes.index(-1)] = shape[axis] - (sum(sizes) + 1)
    outs = []
    for s in sizes:
        o = list(shape)
        o[axis] = s
        outs.append(o)
    return (lambda t: tuple(torch.split(t, sizes, dim=axis))), [x], outs


def _build_reshape(m: TfjsGraphModule, node, inputs):
    x, shape_ref = inputs
    src = m.shape_of(x)
    target = [int(v) for v in m._const(shape_ref).tolist()]
    if -1 in target:
        known = int(np.prod([t for t in target if t != -1]))
        target[target.index(-1)] = int(np.prod(src)) // known
    # Merging trailing dims while keeping the leading ones is a flatten; written that way
    # it holds for any batch size and resolution.
    for start in range(1, len(src)):
        if list(src[:start]) == target[:start] and len(target) == start + 1 and \
                target[start] == int(np.prod(src[start:])):
            return partial(torch.flatten, start_dim=start), [x], [target]
    raise UnsupportedGraphError(f"Reshape {node['name']!r}: {src} -> {target}")


def _unary(fn):
    def build(m: TfjsGraphModule, node, inputs):
        return fn, inputs[:1], [m.shape_of(inputs[0])]

    return build


_BUILDERS = {
    "Conv2D": _build_conv2d,
    "Add": _binary(torch.add),
    "AddV2": _binary(torch.add),
    "Pad": _build_pad,
    "PadV2": _build_pad,
    "Transpose": _build_transpose,
    "LeakyRelu": _build_leaky_relu,
    "MaxPool": _build_max_pool,
    "ConcatV2": _build_concat,
    "ResizeBilinear": _build_resize_bilinear,
    "SplitV": _build_split_v,
    "Reshape": _build_reshape,
    "Sigmoid": _unary(torch.sigmoid),
    "Identity": _unary(lambda t: t),
}


def load_tfjs_graph(model_json_path: str | Path) -> TfjsGraphModule:
    """Load ``model.json`` and its weight shards (beside it) as a torch module."""
    path = Path(model_json_path)
    model_json = json.loads(path.read_text())
    if model_json.get("format") != "graph-model":
        raise UnsupportedGraphError(f"{path.name}: not a TF.js graph model")
    return TfjsGraphModule(model_json, load_weights(model_json, path.parent))
