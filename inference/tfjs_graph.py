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

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inference.tfjs_ops import (
    BUILDERS,
    FOLDABLE,
    Constant,
    Node,
    OpFn,
    Ref,
    UnsupportedGraphError,
    attr,
    ref,
)

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
# Shard storage types of quantized weights (tfjs-converter's --quantize_* options).
_STORED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


def load_weights(model_json: dict[str, Any], weights_dir: Path) -> dict[str, np.ndarray]:
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


@dataclass
class _Step:
    fn: OpFn
    inputs: Sequence[Ref]
    name: str


class TfjsGraphModule(nn.Module):
    """A TF.js graph as a torch module: ``forward(x) -> tuple`` of the graph's outputs."""

    def __init__(self, model_json: dict[str, Any], weights: dict[str, np.ndarray]):
        super().__init__()
        graph: list[Node] = model_json["modelTopology"]["node"]
        signature = model_json.get("signature", {})
        self.output_names = sorted(
            (ref(o["name"])[0] for o in signature.get("outputs", {}).values()),
            key=lambda n: (len(n), n),
        )
        placeholders = [n for n in graph if n["op"] == "Placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedGraphError("exactly one input placeholder is supported")
        self.input_name: str = placeholders[0]["name"]
        self.input_shape = [int(d["size"]) for d in attr(placeholders[0], "shape")["shape"]["dim"]]
        compiler = _Compiler(self, graph, weights, self.input_name, self.input_shape)
        self._steps = compiler.compile(self.output_names)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values: dict[Ref, torch.Tensor] = {(self.input_name, 0): x}
        for step in self._steps:
            out = step.fn(*(values[i] for i in step.inputs))
            if isinstance(out, tuple):
                for k, t in enumerate(out):
                    values[(step.name, k)] = t
            else:
                values[(step.name, 0)] = out
        return tuple(values[(n, 0)] for n in self.output_names)


class _Compiler:
    """Turns one graph into the module's steps; op builders see it as a ``GraphCompiler``.

    Constants become buffers of ``module``. Static shapes at the exported input size guide
    the rewrites; they are checked against, never baked in.
    """

    def __init__(
        self,
        module: nn.Module,
        graph: list[Node],
        weights: dict[str, np.ndarray],
        input_name: str,
        input_shape: Sequence[int],
    ):
        self._module = module
        self._graph = graph
        self._nodes = {n["name"]: n for n in graph}
        self._consts: dict[str, np.ndarray] = dict(weights)
        self._consumers: dict[Ref, list[str]] = {}
        for n in graph:
            for i in n.get("input", []):
                if not i.startswith("^"):
                    self._consumers.setdefault(ref(i), []).append(n["name"])
        self._input_name = input_name
        self._shapes: dict[Ref, tuple[int, ...]] = {(input_name, 0): tuple(input_shape)}
        self._steps: list[_Step | None] = []  # None: dropped, its work taken over
        self._step_of: dict[str, int] = {}
        self._absorbed: dict[str, str] = {}  # bias Add node -> conv that absorbed it
        self._buffer_count = 0

    def compile(self, output_names: Sequence[str]) -> list[_Step]:
        """The steps computing ``output_names``, in an order that respects their inputs."""
        done: set[str] = {self._input_name}
        done.update(n["name"] for n in self._graph if n["op"] == "Const")
        done.update(self._consts)

        def visit(name: str, trail: tuple[str, ...] = ()) -> None:
            if name in done:
                return
            if name in trail:
                raise UnsupportedGraphError(f"cycle through {name!r}")
            node = self._nodes[name]
            for inp in node.get("input", []):
                if not inp.startswith("^"):
                    visit(ref(inp)[0], trail + (name,))
            self._compile_node(node)
            done.add(name)

        for out in output_names:
            visit(out)
        return [s for s in self._steps if s is not None]

    def _compile_node(self, node: Node) -> None:
        op, name = node["op"], node["name"]
        inputs = [ref(i) for i in node.get("input", []) if not i.startswith("^")]
        if all(self.is_const(i) for i in inputs) and op in FOLDABLE:
            self._consts[name] = FOLDABLE[op]([self.const(i) for i in inputs], node)
            return
        builder = BUILDERS.get(op)
        if builder is None:
            raise UnsupportedGraphError(f"op {op!r} (node {name!r}) is not supported")
        fn, dynamic, out_shapes = builder(self, node, inputs)
        self._step_of[name] = len(self._steps)
        self._steps.append(_Step(fn, dynamic, name))
        for k, shape in enumerate(out_shapes):
            self._shapes[(name, k)] = tuple(shape)

    # -- GraphCompiler: what op builders may ask and change --------------------------

    def shape_of(self, ref: Ref) -> tuple[int, ...]:
        if self.is_const(ref):
            return tuple(self.const(ref).shape)
        return self._shapes[ref]

    def is_const(self, ref: Ref) -> bool:
        return ref[1] == 0 and ref[0] in self._consts

    def const(self, ref: Ref) -> np.ndarray:
        return self._consts[ref[0]]

    def buffer(self, array: np.ndarray) -> Constant:
        # Read at each call, not captured: ``.to(device)`` replaces the module's buffers.
        module, name = self._module, f"const_{self._buffer_count}"
        module.register_buffer(name, torch.as_tensor(np.ascontiguousarray(array)), persistent=False)
        self._buffer_count += 1
        return lambda: module.get_buffer(name)

    def node(self, name: str) -> Node:
        return self._nodes[name]

    def readers(self, ref: Ref) -> Sequence[str]:
        return self._consumers.get(ref, [])

    def sole_producer(self, ref: Ref, op: str) -> Node | None:
        if ref[1] != 0 or ref[0] not in self._step_of:
            return None
        node = self._nodes[ref[0]]
        if node["op"] != op or len(self.readers(ref)) != 1:
            return None
        return node

    def drop(self, node: Node) -> None:
        self._steps[self._step_of.pop(node["name"])] = None

    def absorb(self, add: Node, conv_name: str) -> None:
        self._absorbed[add["name"]] = conv_name

    def absorbed_into(self, name: str) -> str | None:
        return self._absorbed.get(name)


def load_tfjs_graph(model_json_path: str | Path) -> TfjsGraphModule:
    """Load ``model.json`` and its weight shards (beside it) as a torch module."""
    path = Path(model_json_path)
    model_json = json.loads(path.read_text())
    if model_json.get("format") != "graph-model":
        raise UnsupportedGraphError(f"{path.name}: not a TF.js graph model")
    return TfjsGraphModule(model_json, load_weights(model_json, path.parent))
