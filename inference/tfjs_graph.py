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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from inference.tfjs_ops import BUILDERS, FOLDABLE, UnsupportedGraphError, attr, ref

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
# Shard storage types of quantized weights (tfjs-converter's --quantize_* options).
_STORED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


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
            (ref(o["name"])[0] for o in signature.get("outputs", {}).values()),
            key=lambda n: (len(n), n),
        )
        placeholders = [n for n in graph if n["op"] == "Placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedGraphError("exactly one input placeholder is supported")
        self.input_name = placeholders[0]["name"]
        self.input_shape = [int(d["size"]) for d in attr(placeholders[0], "shape")["shape"]["dim"]]
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
                    self._consumers.setdefault(ref(i), []).append(n["name"])
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
                    visit(ref(inp)[0], trail + (name,))
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
        inputs = [ref(i) for i in node.get("input", []) if not i.startswith("^")]
        if all(self._is_const(i) for i in inputs) and op in FOLDABLE:
            self._consts[name] = FOLDABLE[op]([self._const(i) for i in inputs], node)
            return
        builder = BUILDERS.get(op)
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


def load_tfjs_graph(model_json_path: str | Path) -> TfjsGraphModule:
    """Load ``model.json`` and its weight shards (beside it) as a torch module."""
    path = Path(model_json_path)
    model_json = json.loads(path.read_text())
    if model_json.get("format") != "graph-model":
        raise UnsupportedGraphError(f"{path.name}: not a TF.js graph model")
    return TfjsGraphModule(model_json, load_weights(model_json, path.parent))
