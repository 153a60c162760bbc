"""fastrnn.onnx.export: the exported graph, run by ONNX Runtime (and OpenVINO when installed),
gives what fastrnn gives."""
import numpy as np
import pytest

import fastrnn
from conftest import CELLS, make_layer

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from fastrnn.onnx import export  # noqa: E402


def run_ort(path, x, lengths=None):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"x": x} if lengths is None else {"x": x, "lengths": np.asarray(lengths, np.int64)}
    return session.run(["y"], feed)[0]


def random_lengths(rng, B, T):
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    return lengths


@pytest.mark.filterwarnings("ignore:.*OpenVINO")      # (what test_export_warns_... checks)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_recurrent_layers_equal_onnx_runtime(tmp_path, rng, cell, bidirectional,
                                             return_sequences):
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=bidirectional, seed=1,
                       return_sequences=return_sequences)
    model = fastrnn.Sequential([layer])
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    lengths = random_lengths(rng, 4, 6)
    export(model, tmp_path / "m.onnx", lengths=True)
    np.testing.assert_allclose(run_ort(tmp_path / "m.onnx", x, lengths),
                               model.predict(x, lengths=lengths), rtol=1e-4, atol=1e-5)
    export(model, tmp_path / "full.onnx")
    np.testing.assert_allclose(run_ort(tmp_path / "full.onnx", x), model.predict(x),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("activation", [None, "softmax", "sigmoid"])
def test_a_text_classifier_and_a_tagger_equal_onnx_runtime(tmp_path, rng, activation):
    classifier = fastrnn.Sequential([
        fastrnn.Embedding(20, 4, seed=0), fastrnn.LSTM(4, 6, seed=1), fastrnn.Dropout(0.3),
        fastrnn.GRU(6, 5, bidirectional=True, return_sequences=False, seed=2),
        fastrnn.Dense(10, 3, activation=activation, seed=3)])
    tagger = fastrnn.Sequential([fastrnn.LSTM(3, 6, seed=1),
                                 fastrnn.Dense(6, 2, activation=activation, seed=3)])
    tokens = rng.integers(0, 20, (5, 7))
    x = rng.standard_normal((5, 7, 3)).astype(np.float32)
    lengths = random_lengths(rng, 5, 7)
    for model, inp in ((classifier, tokens), (tagger, x)):
        export(model, tmp_path / "m.onnx", lengths=True)
        np.testing.assert_allclose(run_ort(tmp_path / "m.onnx", inp, lengths),
                                   model.predict(inp, lengths=lengths), rtol=1e-4, atol=1e-5)


def test_dynamic_axes_no_bias_and_float64(tmp_path, rng):
    model = fastrnn.Sequential([fastrnn.GRU(2, 3, bias=False, seed=0),
                                fastrnn.Dense(3, 1, seed=1)])
    export(model, tmp_path / "m.onnx")
    for B, T in ((1, 1), (3, 9)):
        x = rng.standard_normal((B, T, 2)).astype(np.float32)
        np.testing.assert_allclose(run_ort(tmp_path / "m.onnx", x), model.predict(x),
                                   rtol=1e-4, atol=1e-6)
    # float64 graphs are valid ONNX (ONNX Runtime runs recurrent nodes in float32 only)
    proto = export(fastrnn.LSTM(2, 3, dtype="float64"), tmp_path / "d.onnx")
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


@pytest.mark.parametrize("make", [lambda: fastrnn.LSTM(3, 6, bidirectional=True, seed=1),
                                  lambda: fastrnn.GRU(3, 6, bidirectional=True, seed=1,
                                                      reset_after=False)],
                         ids=["lstm", "gru_reset_before"])
def test_openvino_runs_the_export(tmp_path, rng, make):
    ov = pytest.importorskip("openvino")
    model = fastrnn.Sequential([make(), fastrnn.Dense(12, 2, seed=2)])
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    lengths = random_lengths(rng, 4, 6)
    export(model, tmp_path / "m.onnx", lengths=True)
    # f32: on CPUs with bf16 units OpenVINO would otherwise compute in bfloat16
    compiled = ov.Core().compile_model(str(tmp_path / "m.onnx"), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled({"x": x, "lengths": lengths.astype(np.int64)})[compiled.output("y")]
    np.testing.assert_allclose(got, model.predict(x, lengths=lengths), rtol=1e-4, atol=1e-5)


def test_export_warns_of_what_openvino_runs_wrong(tmp_path, rng):
    """OpenVINO ignores an LSTM node's peepholes and refuses LeakyRelu RNN nodes: export says
    so (ONNX Runtime runs both right: test_recurrent_layers_equal_onnx_runtime)."""
    for layer in (fastrnn.LSTM(3, 4, peepholes=True), fastrnn.RNN(3, 4, nonlinearity="leaky_relu")):
        with pytest.warns(UserWarning, match="OpenVINO"):
            export(layer, tmp_path / "m.onnx")
    ov = pytest.importorskip("openvino")
    model = fastrnn.Sequential([fastrnn.LSTM(3, 6, peepholes=True, seed=1)])
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    with pytest.warns(UserWarning):
        export(model, tmp_path / "p.onnx")
    compiled = ov.Core().compile_model(str(tmp_path / "p.onnx"), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled({"x": x})[compiled.output("y")]
    model.layers[0].parameters()["weight_peephole_l0"][:] = 0
    # what the warning says: OpenVINO's outputs are those without the peepholes
    np.testing.assert_allclose(got, model.predict(x), rtol=1e-4, atol=1e-5)


def test_what_export_refuses(tmp_path):
    with pytest.raises(TypeError, match="export covers"):
        export(object(), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="needs sequences"):
        export(fastrnn.Sequential([fastrnn.LSTM(3, 4, return_sequences=False),
                                   fastrnn.GRU(4, 2)]), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="lengths must be True or False"):
        export(fastrnn.LSTM(3, 4), tmp_path / "m.onnx", lengths="yes")
    with pytest.raises(ValueError, match=r"projection \(proj_size=2\): ONNX's LSTM operator"):
        export(fastrnn.Sequential([fastrnn.LSTM(3, 4, proj_size=2, return_sequences=False),
                                   fastrnn.Dense(2, 1)]), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
