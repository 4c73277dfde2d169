"""The torch port of the NanoDet TF.js graph against the original graph run by TF.js."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.nanodet import DEFAULT_MODEL_JSON
from inference.tfjs_graph import (
    TfjsGraphModule,
    UnsupportedGraphError,
    load_tfjs_graph,
    load_weights,
)
from tests.fixtures.nanodet_tfjs.reference import load_reference

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent / "fixtures" / "nanodet_tfjs"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def graph() -> TfjsGraphModule:
    return load_tfjs_graph(DEFAULT_MODEL_JSON).eval()


@pytest.mark.parametrize("case", load_reference(FIXTURE), ids=lambda c: c.name)
def test_torch_port_matches_tfjs_reference_within_1e_4(graph, case):
    with torch.inference_mode():
        outputs = graph(torch.from_numpy(case.input))
    by_name = {
        f"{name}:0": out.numpy() for name, out in zip(graph.output_names, outputs, strict=True)
    }
    assert set(by_name) == set(case.outputs)
    for name, ref in case.outputs.items():
        got = by_name[name]
        assert got.shape == tuple(ref.full_shape)
        np.testing.assert_allclose(got[0, ref.rows], ref.samples, atol=TOLERANCE, rtol=0)
        # The sums cover every row, including those the fixture did not sample.
        assert got.astype(np.float64).sum() == pytest.approx(ref.sum, abs=TOLERANCE * got.size)
        assert np.abs(got.astype(np.float64)).sum() == pytest.approx(
            ref.abs_sum, abs=TOLERANCE * got.size
        )


def test_channels_last_execution_gives_the_same_outputs(graph):
    x = torch.from_numpy(load_reference(FIXTURE)[1].input)
    with torch.inference_mode():
        plain = graph(x)
        fast = graph.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last)
        )
    graph.to(memory_format=torch.contiguous_format)
    for a, b in zip(plain, fast, strict=True):
        torch.testing.assert_close(a, b, atol=TOLERANCE, rtol=0)


def test_graph_runs_at_any_batch_size_and_multiple_of_32_resolution(graph):
    with torch.inference_mode():
        outputs = graph(torch.zeros(3, 3, 192, 256))
    anchors = [24 * 32, 12 * 16, 6 * 8]  # (h/s) * (w/s) for strides 8, 16, 32
    assert [tuple(o.shape) for o in outputs] == [(3, a, 80) for a in anchors] + [
        (3, a, 44) for a in anchors
    ]


def test_graph_refuses_ops_it_cannot_translate():
    model_json = json.loads(DEFAULT_MODEL_JSON.read_text())
    nodes = model_json["modelTopology"]["node"]
    next(n for n in nodes if n["op"] == "LeakyRelu")["op"] = "Selu"
    with pytest.raises(UnsupportedGraphError, match="Selu"):
        TfjsGraphModule(model_json, load_weights(model_json, DEFAULT_MODEL_JSON.parent))
