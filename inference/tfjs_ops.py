"""Translations of TF.js graph ops into torch calls, used by ``tfjs_graph``.

Each builder gets the graph under compilation (seen only through ``GraphCompiler``), the
node and its input references, and returns ``(fn, dynamic_inputs, output_shapes)``.
Folders evaluate nodes whose inputs are all constants once, at load time.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

# A GraphDef node in its protobuf-JSON form, as ``model.json`` holds it.
Node = dict[str, Any]
# A tensor: (node name, output index).
Ref = tuple[str, int]
OpFn = Callable[..., torch.Tensor | tuple[torch.Tensor, ...]]
# What a builder returns: the torch call, the refs it reads, the shape of each output.
Built = tuple[OpFn, Sequence[Ref], Sequence[Sequence[int]]]
Constant = Callable[[], torch.Tensor]


class UnsupportedGraphError(ValueError):
    """The graph uses an op or a pattern this converter does not translate."""


class GraphCompiler(Protocol):
    """What an op's builder may ask of the graph being compiled, and change in it."""

    def shape_of(self, ref: Ref) -> tuple[int, ...]:
        """The static shape of ``ref`` at the input size the graph was exported at."""

    def is_const(self, ref: Ref) -> bool:
        """Whether ``ref`` is known at load time (a weight or a folded node)."""

    def const(self, ref: Ref) -> np.ndarray:
        """The value of a constant ``ref``."""

    def buffer(self, array: np.ndarray) -> Constant:
        """Keep ``array`` as a module buffer; the getter reads it wherever it now lives."""

    def node(self, name: str) -> Node:
        """The node called ``name``."""

    def readers(self, ref: Ref) -> Sequence[str]:
        """The names of the nodes that read ``ref``."""

    def sole_producer(self, ref: Ref, op: str) -> Node | None:
        """The compiled node of type ``op`` making ``ref``, if nothing else reads ``ref``."""

    def drop(self, node: Node) -> None:
        """Remove an already compiled ``node`` whose work a later step has taken over."""

    def absorb(self, add: Node, conv_name: str) -> None:
        """Record that the convolution ``conv_name`` adds the bias of ``add`` itself."""

    def absorbed_into(self, name: str) -> str | None:
        """The convolution that took over node ``name``'s bias add, if one did."""


Builder = Callable[[GraphCompiler, Node, list[Ref]], Built]


def attr(node: Node, key: str, default: Any = None) -> Any:
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


def ref(name: str) -> Ref:
    """Split a tensor reference ``node:k`` into (node, output index)."""
    node, _, index = name.partition(":")
    return node, int(index or 0)


def _pad_args(paddings: np.ndarray) -> list[int]:
    """TF paddings [[before, after], ...] → torch F.pad order (last dim first)."""
    out: list[int] = []
    for before, after in paddings[::-1].tolist():
        out += [int(before), int(after)]
    return out


def _pair(values: Sequence[int]) -> tuple[int, int]:
    """The (height, width) entries of an NHWC attribute such as ``strides``."""
    return int(values[1]), int(values[2])


def _fold_sparse_to_dense(args: Sequence[np.ndarray], node: Node) -> np.ndarray:
    indices, shape, values, default = args
    dense = np.full(shape.astype(np.int64), default, dtype=values.dtype)
    indices = indices.reshape(-1, dense.ndim)
    values = np.broadcast_to(values, (len(indices),))
    for idx, v in zip(indices.tolist(), values.tolist(), strict=True):
        dense[tuple(idx)] = v
    return dense


FOLDABLE: dict[str, Callable[[Sequence[np.ndarray], Node], np.ndarray]] = {
    "Identity": lambda a, n: a[0],
    "Add": lambda a, n: a[0] + a[1],
    "AddV2": lambda a, n: a[0] + a[1],
    "SparseToDense": _fold_sparse_to_dense,
}


def _fold_conv_input(g: GraphCompiler, x: Ref) -> tuple[Ref, tuple[int, int]] | None:
    """Find the NCHW tensor behind ``Pad -> Transpose(NCHW->NHWC) -> conv``.

    The exported graph wraps every convolution in layout transposes and an explicit zero
    pad. Reading the NCHW tensor directly and letting the convolution pad is the same
    arithmetic with two fewer passes over memory. Returns (NCHW ref, (pad_h, pad_w)) or
    None when the pattern does not match exactly.
    """
    transpose = g.sole_producer(x, "Transpose")
    if transpose is None:
        return None
    t_in, perm_ref = (ref(i) for i in transpose["input"])
    if g.const(perm_ref).tolist() != [0, 2, 3, 1]:
        return None
    g.drop(transpose)
    pad = g.sole_producer(t_in, "Pad")
    if pad is not None:
        p_in, pads_ref = (ref(i) for i in pad["input"])
        pads = g.const(pads_ref).tolist()
        if (
            pads[0] == [0, 0]
            and pads[1] == [0, 0]
            and pads[2][0] == pads[2][1]
            and pads[3][0] == pads[3][1]
        ):
            g.drop(pad)
            return p_in, (int(pads[2][0]), int(pads[3][0]))
    return t_in, (0, 0)


def _bias_after(g: GraphCompiler, conv_name: str, channels: int) -> np.ndarray | None:
    """The constant per-channel bias added right after a convolution, if any."""
    readers = g.readers((conv_name, 0))
    if len(readers) != 1:
        return None
    add = g.node(readers[0])
    if add["op"] not in ("Add", "AddV2"):
        return None
    refs = [ref(i) for i in add["input"]]
    other = refs[1] if refs[0] == (conv_name, 0) else refs[0]
    if not g.is_const(other) or g.const(other).shape != (channels,):
        return None
    g.absorb(add, conv_name)
    return g.const(other)


def _build_conv2d(g: GraphCompiler, node: Node, inputs: list[Ref]) -> Built:
    x, w = inputs
    if attr(node, "data_format", "NHWC") != "NHWC" or attr(node, "padding") != "VALID":
        raise UnsupportedGraphError(f"Conv2D {node['name']!r}: only NHWC VALID")
    if any(d != 1 for d in attr(node, "dilations", [1, 1, 1, 1])):
        raise UnsupportedGraphError(f"Conv2D {node['name']!r}: dilation")
    filt = g.const(w)  # [kh, kw, in/groups, out]
    n, h, wd, c = g.shape_of(x)
    groups = c // filt.shape[2]
    stride = _pair(attr(node, "strides"))
    weight = g.buffer(filt.transpose(3, 2, 0, 1))
    bias_value = _bias_after(g, node["name"], filt.shape[3])
    bias = g.buffer(bias_value) if bias_value is not None else None
    oh = (h - filt.shape[0]) // stride[0] + 1
    ow = (wd - filt.shape[1]) // stride[1] + 1
    out_shape = [(n, oh, ow, filt.shape[3])]
    folded = _fold_conv_input(g, x)

    def convolve(t: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
        b = bias() if bias is not None else None
        y = F.conv2d(t, weight(), b, stride=stride, padding=padding, groups=groups)
        return y.permute(0, 2, 3, 1)

    if folded is None:

        def conv(t: torch.Tensor) -> torch.Tensor:
            return convolve(t.permute(0, 3, 1, 2), (0, 0))

        return conv, [x], out_shape

    src, padding = folded

    def conv_nchw(t: torch.Tensor) -> torch.Tensor:
        return convolve(t, padding)

    return conv_nchw, [src], out_shape


Binary = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _binary(fn: Binary) -> Builder:
    def build(g: GraphCompiler, node: Node, inputs: list[Ref]) -> Built:
        a, b = inputs
        conv_name = g.absorbed_into(node["name"])
        if conv_name is not None:
            conv = (conv_name, 0)
            return (lambda t: t), [conv], [g.shape_of(conv)]
        shapes = [g.shape_of(a), g.shape_of(b)]
        out = tuple(np.broadcast_shapes(*shapes))
        if g.is_const(b):
            b_value = g.buffer(g.const(b))
            return (lambda t: fn(t, b_value())), [a], [out]
        if g.is_const(a):
            a_value = g.buffer(g.const(a))
            return (lambda t: fn(a_value(), t)), [b], [out]
        return fn, [a, b], [out]

    return build


def _build_pad(g: GraphCompiler, node: Node, inputs: list[Ref]) -> Built:
    x, p = inputs[0], inputs[1]
    value = float(g.const(inputs[2])) if len(inputs) > 2 else 0.0
    pads = g.const(p)
    args = _pad_args(pads)
    shape = [s + int(a) + int(b) for s, (a, b) in zip(g.shape_of(x), pads.tolist(), strict=True)]
    return (lambda t: F.pad(t, args, value=value)), [x], [shape]


def _build_transpose(g: GraphCompiler, node: Node, inputs: list[Ref]) -> Built:
    x, p = inputs
    perm = [int(v) for v in g.const(p).tolist()]
    shape = [g.shape_of(x)[i] for i in perm]
    return (lambda t: t.permute(*perm)), [x], [shape]


def _build_leaky_relu(g: GraphCompiler, node: Node, inputs: list[Ref]) -> Built:
    alpha = attr(node, "alpha", 0.2)
    return (lambda t: F.leaky_relu(t, alpha)), inputs[:1], [g.shape_of(inputs[0])]


def _build_max_pool(g: GraphCompiler, node: Node, inputs: list[Ref]) -> Built:
    if attr(node, "data_format", "NHWC") != "NHWC" or attr(node, "padding") != "VALID":
        raise UnsupportedGraphError(f"MaxPool {node['name']!r}: only NHWC VALID")
    k = _pair(attr(node, "ksize"))
    s = _pair(attr(node, "strides"))
    n, h, w, c = g.shape_of(inputs[0])

    def pool(t: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(t.permute(0, 3, 1, 2), k, s).permute(0, 2, 3, 1)

    shape = (n, (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1, c)
    return pool, inputs[:1], [shape]


def _build_concat(g: GraphCompiler, node: Node, inputs: list[Ref]) -> Built:
    *parts, axis_ref = inputs
    axis = int(g.const(axis_ref))
    shapes = [g.shape_of(p) for p in parts]
    axis %= len(shapes[0])
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return (lambda *ts: torch.cat(ts, dim=axis)), parts, [out]


def _build_resize_bilinear(g: GraphCompiler, node: Node, inputs: list[Ref]) -> Built:
    x, size_ref = inputs
    if attr(node, "align_corners", False) or not attr(node, "half_pixel_centers", False):
        raise UnsupportedGraphError("ResizeBilinear: only half_pixel_centers without corners")
    n, h, w, c = g.shape_of(x)
    oh, ow = (int(v) for v in g.const(size_ref).tolist())
    # Keep the ratio, not the size: the same graph then serves any input resolution. With
    # half-pixel centres, TF and torch (align_corners=False, explicit size) sample alike.
    ratio = (Fraction(oh, h), Fraction(ow, w))

    def resize(t: torch.Tensor) -> torch.Tensor:
        size = [d * r for d, r in zip(t.shape[1:3], ratio, strict=True)]
        if any(s.denominator != 1 for s in size):
            raise ValueError(f"input size {tuple(t.shape[1:3])} does not scale by {ratio}")
        y = F.interpolate(
            t.permute(0, 3, 1, 2), size=[int(s) for s in size], mode="bilinear", align_corners=False
        )
        return y.permute(0, 2, 3, 1)

    return resize, [x], [(n, oh, ow, c)]


def _build_split_v(g: GraphCompiler, node: Node, inputs: list[Ref]) -> Built:
    x, sizes_ref, axis_ref = inputs
    sizes = [int(v) for v in g.const(sizes_ref).tolist()]
    shape = g.shape_of(x)
    axis = int(g.const(axis_ref)) % len(shape)
    if -1 in sizes:
        sizes[sizes.index(-1)] = shape[axis] - (sum(sizes) + 1)
    outs: list[Sequence[int]] = []
    for s in sizes:
        o = list(shape)
        o[axis] = s
        outs.append(o)
    return (lambda t: tuple(torch.split(t, sizes, dim=axis))), [x], outs


def _build_reshape(g: GraphCompiler, node: Node, inputs: list[Ref]) -> Built:
    x, shape_ref = inputs
    src = g.shape_of(x)
    target = [int(v) for v in g.const(shape_ref).tolist()]
    if -1 in target:
        known = int(np.prod([t for t in target if t != -1]))
        target[target.index(-1)] = int(np.prod(src)) // known
    # Merging trailing dims while keeping the leading ones is a flatten; written that way
    # it holds for any batch size and resolution.
    for start in range(1, len(src)):
        if (
            list(src[:start]) == target[:start]
            and len(target) == start + 1
            and target[start] == int(np.prod(src[start:]))
        ):
            return partial(torch.flatten, start_dim=start), [x], [target]
    raise UnsupportedGraphError(f"Reshape {node['name']!r}: {src} -> {target}")


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Builder:
    def build(g: GraphCompiler, node: Node, inputs: list[Ref]) -> Built:
        return fn, inputs[:1], [g.shape_of(inputs[0])]

    return build


BUILDERS: dict[str, Builder] = {
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
