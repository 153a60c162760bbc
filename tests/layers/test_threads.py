"""The thread model (README, "Threads"), and the in-place edits a backward pass refuses.

Inference (``step``, ``__call__`` with ``training=False``, ``predict``) from many threads on one
layer or model gives the serial results bit for bit, also while another thread refreshes the
weights (with the same values); training is exclusive per layer and model; ``step`` returns
arrays of its own and sees every edit of the live weights; a backward pass refuses inputs and
weights edited in place since its forward pass.
"""
import copy
import threading

import numpy as np
import pytest
from conftest import has_c, make_layer

import fastrnn
from fastrnn.layers import BACKENDS

THREADS = 4
CALLS = 1000
BACKEND_NAMES = [b for b in BACKENDS if b == "reference" or fastrnn.engine.AVAILABLE]
CELLS = ("rnn_tanh", "lstm", "gru")


def run_threads(work, refresh=None):
    """``work(i)`` on THREADS threads at once (and ``refresh()`` in a loop on one more until
    they end); re-raises the first exception of any of them."""
    errors, stop = [], threading.Event()
    start = threading.Barrier(THREADS + (refresh is not None))

    def guarded(f, *args):
        try:
            start.wait()
            f(*args)
        except BaseException as e:      # noqa: BLE001 - re-raised in the main thread
            errors.append(e)

    def refresher():
        while not stop.is_set():
            refresh()

    threads = [threading.Thread(target=guarded, args=(work, i)) for i in range(THREADS)]
    if refresh is not None:
        threads.append(threading.Thread(target=guarded, args=(refresher,)))
    for t in threads:
        t.start()
    for t in threads[:THREADS]:
        t.join()
    stop.set()
    for t in threads[THREADS:]:
        t.join()
    if errors:
        raise errors[0]


def refresh_weights(layer):
    """What refreshes a layer's weights in another thread, with the values they already hold."""
    def refresh():
        layer.load_state_dict(layer.state_dict())
        layer.parameters()
    return refresh


def assert_all_equal(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- inference

def step_calls(layer, i, x):
    """Thread ``i``'s CALLS steps: its own batch size, state carried, restarted every 50."""
    out, state = [], None
    xi = x[:i + 1]                       # batch sizes 1..4: the step's scratch differs
    for k in range(CALLS):
        y, state = layer.step(xi, None if k % 50 == 0 else state)
        out.append(y)
    return out


@pytest.mark.parametrize("cell,hidden,backend", [(c, 24, b) for c in CELLS for b in BACKEND_NAMES]
                         + [("lstm", 256, b) for b in BACKEND_NAMES if b == "compiled"])
def test_step_from_threads_equals_serial(cell, hidden, backend, rng):
    """(H=256: the compiled step splits the units over two threads of its own.)"""
    layer = make_layer(cell, 6, hidden, num_layers=2, seed=1, backend=backend)
    x = rng.standard_normal((THREADS, 6)).astype(np.float32) * 0.5
    serial = [step_calls(layer, i, x) for i in range(THREADS)]
    results = [None] * THREADS

    def work(i):
        results[i] = step_calls(layer, i, x)

    run_threads(work, refresh_weights(layer))
    for i in range(THREADS):
        assert_all_equal(results[i], serial[i])


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("cell", CELLS)
def test_call_from_threads_equals_serial(cell, backend, rng):
    layer = make_layer(cell, 4, 12, seed=2, backend=backend)
    xs = [rng.standard_normal((i + 1, 2 + i, 4)).astype(np.float32) for i in range(THREADS)]
    lengths = [None, np.array([3, 1]), None, np.array([5, 2, 4, 1])]

    def calls(i):
        return [layer(xs[i], lengths=lengths[i])[0] for _ in range(CALLS // 4)] + \
               [layer.model_forward(xs[i], lengths[i])[1] for _ in range(CALLS // 4)]

    layer(xs[0], training=True)            # a training cache that inference must not disturb
    serial = [calls(i)[::CALLS // 4] for i in range(THREADS)]
    results = [None] * THREADS

    def work(i):
        results[i] = calls(i)

    run_threads(work, refresh_weights(layer))
    for i in range(THREADS):
        assert_all_equal(results[i], [serial[i][0]] * (CALLS // 4) + [serial[i][1]] * (CALLS // 4))
    layer.backward(np.ones((1, 2, 12), np.float32))    # the cache is intact


def small_model(backend):
    return fastrnn.Sequential([
        fastrnn.Embedding(7, 4, seed=0),
        fastrnn.GRU(4, 8, seed=1, backend=backend),
        fastrnn.RNN(8, 8, seed=2, backend=backend),
        fastrnn.LSTM(8, 8, seed=3, backend=backend, return_sequences=False),
        fastrnn.Dense(8, 3, activation="softmax", seed=4),
    ])


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_predict_from_threads_equals_serial(backend, rng):
    model = small_model(backend)
    tokens = [rng.integers(0, 7, size=(i + 1, 3 + i)) for i in range(THREADS)]
    serial = [model.predict(t) for t in tokens]
    calls = CALLS // 4 if backend == "reference" else CALLS
    results = [None] * THREADS

    def work(i):
        results[i] = [model.predict(tokens[i]) for _ in range(calls)]

    run_threads(work, refresh_weights(model.layers[3]))
    for i in range(THREADS):
        assert_all_equal(results[i], [serial[i]] * calls)


# ---------------------------------------------------------------------------- step's arrays

@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("cell", CELLS)
def test_step_output_is_not_the_state(cell, backend, rng):
    layer = make_layer(cell, 3, 5, num_layers=2, seed=0, backend=backend)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    y, state = layer.step(x)
    expected, _ = layer.step(x, copy.deepcopy(state))
    y += 1.0                                # an edit of y leaves the state alone
    np.testing.assert_array_equal(layer.step(x, state)[0], expected)


@pytest.mark.parametrize("how", ["step", "call"])
@pytest.mark.parametrize("cell", CELLS)
def test_inference_sees_edits_of_the_live_weights(cell, how, rng):
    """Through a parameters() dict taken before the call, a view of it, a memoryview, a
    parameters() dict dropped at once, and load_state_dict: ``step`` and ``__call__`` keep
    packed weights between calls, and never stale ones."""
    layer = make_layer(cell, 3, 5, seed=0)
    twin = make_layer(cell, 3, 5, seed=0)
    x = rng.standard_normal((2, 3) if how == "step" else (2, 4, 3)).astype(np.float32)

    def infer(lay):
        return lay.step(x)[0] if how == "step" else lay(x)[0]

    params = layer.parameters()
    infer(layer)
    for name, factor in (("weight_ih_l0", 0.5), ("bias_hh_l0", -1.0)):
        params[name] *= factor
        twin.load_state_dict(params)
        np.testing.assert_array_equal(infer(layer), infer(twin))
    view = params.pop("weight_ih_l0")[1:3]
    buffer = memoryview(params.pop("bias_ih_l0"))
    del params
    infer(layer)
    view[...] = 0.125
    np.frombuffer(buffer, np.float32)[:] = -0.5
    twin.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(infer(layer), infer(twin))
    del view, buffer
    for _ in range(2):          # nothing refers to the weights now: the packing is kept
        np.testing.assert_array_equal(infer(layer), infer(twin))
    for name, edit in (("weight_hh_l0", -2.0), ("bias_ih_l0", 0.25)):
        layer.parameters()[name][...] *= edit
        twin.load_state_dict(layer.state_dict())
        np.testing.assert_array_equal(infer(layer), infer(twin))
    new = {name: p * 0.75 for name, p in layer.state_dict().items()}
    layer.load_state_dict(new)
    twin.load_state_dict(new)
    np.testing.assert_array_equal(infer(layer), infer(twin))


@pytest.mark.skipif(not fastrnn.engine.AVAILABLE, reason="compiled engine not built")
def test_inference_calls_reuse_the_packed_weights(rng):
    """Calls without a change in between pack the weights once (and training calls never
    use the packing: their weights change at every step)."""
    layer = make_layer("lstm", 6, 40, seed=1)
    x = rng.standard_normal((3, 5, 6)).astype(np.float32)
    y = layer(x)[0]
    packing = layer._packing
    assert packing is not None and packing.token == layer._weights_version
    entries = dict(packing._entries)
    assert entries
    np.testing.assert_array_equal(layer(x)[0], y)
    assert layer._packing is packing
    assert all(packing._entries[key] is value for key, value in entries.items())
    layer.parameters()
    layer(x)
    assert layer._packing is not packing


# ---------------------------------------------------------------------------- in-place edits

@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("cell", CELLS)
def test_backward_refuses_inputs_and_weights_edited_since_the_forward(cell, backend, rng):
    layer = make_layer(cell, 3, 4, num_layers=2, dtype="float64", seed=0, backend=backend)
    x = rng.standard_normal((2, 5, 3))
    dy = rng.standard_normal((2, 5, 4))
    layer(x, training=True)
    dx, _ = layer.backward(dy)
    params = layer.parameters()
    for name, edit in [("x", lambda: x.__setitem__((0, 1, 2), 7.0)),
                       ("parameter 'weight_hh_l1'", lambda: params["weight_hh_l1"].__imul__(2)),
                       ("parameter 'weight_ih_l0'", lambda: params["weight_ih_l0"].__iadd__(1))]:
        saved = x.copy(), {k: p.copy() for k, p in params.items()}
        layer(x, training=True)
        edit()
        with pytest.raises(RuntimeError, match=f"{name} was modified in place.*forward pass "
                                               f"again"):
            layer.backward(dy)
        x[...] = saved[0]
        layer.load_state_dict(saved[1])
    h0 = np.zeros((2, 2, 4)) + 0.5
    state0 = (h0, h0.copy()) if has_c(cell) else h0
    layer(x, state=state0, training=True)
    h0 += 1
    with pytest.raises(RuntimeError, match=r"state(\[0\] \(h\))? was modified"):
        layer.backward(dy)
    # the output and the biases are not read back: editing them changes nothing
    y, _ = layer(x, training=True)
    y += 1
    params["bias_ih_l0"] += 1
    np.testing.assert_array_equal(layer.backward(dy)[0], dx)


def test_model_layers_refuse_edited_inputs(rng):
    x = rng.standard_normal((2, 3, 4))
    dense = fastrnn.Dense(4, 2, activation="tanh", dtype="float64", seed=0)
    y, _ = dense.model_forward(x, training=True)
    dx = dense.model_backward(np.ones_like(y))[0]
    y = dense.model_forward(x, training=True)[0]
    y *= 3                                  # its own copy: harmless
    np.testing.assert_array_equal(dense.model_backward(np.ones_like(y))[0], dx)
    dense.model_forward(x, training=True)
    x[0, 0, 0] += 1
    with pytest.raises(RuntimeError, match="^x was modified"):
        dense.model_backward(np.ones_like(y))
    dense.model_forward(x, training=True)
    dense.parameters()["weight"][0, 0] = 9
    with pytest.raises(RuntimeError, match="^parameter 'weight' was modified"):
        dense.backward(np.ones_like(y))
    emb = fastrnn.Embedding(5, 2)
    tokens = np.array([[1, 2, 3]])
    emb(tokens, training=True)
    tokens[0, 0] = 4
    with pytest.raises(RuntimeError, match="^x was modified"):
        emb.backward(np.ones((1, 3, 2)))


# ---------------------------------------------------------------------------- training

@pytest.mark.parametrize("layer", [
    fastrnn.LSTM(2, 3), fastrnn.GRU(2, 3, backend="reference"),
    fastrnn.LSTM(2, 3, return_sequences=False), fastrnn.Dense(2, 3), fastrnn.Embedding(4, 2),
    fastrnn.Dropout(0.5)], ids=repr)
def test_backward_without_a_training_forward(layer):
    x = np.ones((1, 2, 2), np.float32) if not isinstance(layer, fastrnn.Embedding) \
        else np.ones((1, 2), np.int64)
    with pytest.raises(RuntimeError, match="training=True"):
        layer.model_backward(np.ones((1, 2, 3), np.float32))
    layer.model_forward(x)                  # inference leaves nothing to backward
    with pytest.raises(RuntimeError, match="training=True"):
        layer.model_backward(np.ones((1, 2, 3), np.float32))


def in_two_threads(first, second):
    """``first(then)`` in a thread: ``then()`` runs ``second()`` in another thread and waits;
    the result of ``second()``, or its exception, comes back."""
    out = {}

    def then():
        def run():
            try:
                out["second"] = second()
            except Exception as e:         # noqa: BLE001 - returned to the caller
                out["second"] = e
        t = threading.Thread(target=run)
        t.start()
        t.join()

    t = threading.Thread(target=lambda: out.setdefault("first", first(then)))
    t.start()
    t.join()
    return out["first"], out["second"]


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_a_layer_in_training_refuses_a_second_thread(backend, rng):
    layer = fastrnn.GRU(3, 4, backend=backend, seed=0)
    x, x2 = rng.standard_normal((2, 2, 5, 3)).astype(np.float32)
    dy = np.ones((2, 5, 4), np.float32)
    layer(x, training=True)
    want = layer.backward(dy)[0]

    def first(then):
        layer(x, training=True)
        then()
        return layer.backward(dy)[0]

    def second():
        for call in (lambda: layer(x2, training=True), lambda: layer.backward(dy)):
            with pytest.raises(RuntimeError, match="GRU is being trained in thread"):
                call()
        return layer(x2)[0]                 # inference is fine meanwhile

    dx, y2 = in_two_threads(first, second)
    np.testing.assert_array_equal(dx, want)
    np.testing.assert_array_equal(y2, layer(x2)[0])
    with pytest.raises(RuntimeError, match="training=True on this GRU was made in thread"):
        layer.backward(dy)                  # not this thread's forward pass
    layer(x2, training=True)                # after the backward, anyone may train it
    layer.backward(dy)
    t = threading.Thread(target=lambda: layer(x, training=True))
    t.start()
    t.join()
    layer(x2, training=True)                # a thread that ended holds nothing
    layer.backward(dy)


def char_model():
    return fastrnn.Sequential([
        fastrnn.Embedding(6, 4, seed=0),
        fastrnn.LSTM(4, 8, seed=1),
        fastrnn.Dense(8, 6, seed=2),
    ])


def test_fit_while_other_threads_predict(rng):
    x = rng.integers(0, 6, size=(64, 12))
    y = rng.integers(0, 6, size=(64, 12))
    serial = char_model()
    want = serial.fit(x, y, loss="cce", optimizer=fastrnn.optim.SGD(lr=0.0), epochs=3,
                      batch_size=8, verbose=0).history["loss"]
    expected = serial.predict(x[:5])
    model = char_model()
    done, predictions = threading.Event(), []

    def work(i):
        if i == 0:
            try:
                predictions.append(model.fit(x, y, loss="cce", epochs=3, batch_size=8,
                                             optimizer=fastrnn.optim.SGD(lr=0.0), verbose=0))
            finally:
                done.set()
        else:
            while not done.is_set():
                predictions.append(model.predict(x[:5]))

    run_threads(work)
    history = predictions.pop(next(i for i, p in enumerate(predictions)
                                   if not isinstance(p, np.ndarray)))
    assert history.history["loss"] == want
    assert predictions
    assert_all_equal(predictions, [expected] * len(predictions))


def test_fit_in_a_second_thread_is_refused(rng):
    x = rng.integers(0, 6, size=(16, 5))
    y = rng.integers(0, 6, size=(16, 5))
    model = char_model()

    class Then:
        def __init__(self, then):
            self.then = then

        def on_epoch_end(self, model, epoch, logs):
            self.then()

    def first(then):
        return model.fit(x, y, loss="cce", optimizer="sgd", epochs=1, verbose=0,
                         callbacks=[Then(then)])

    def second():
        with pytest.raises(RuntimeError, match="being trained in thread"):
            model.fit(x, y, epochs=1, verbose=0)
        with pytest.raises(RuntimeError, match="being trained in thread"):
            model.trace(x, y)
        return model.predict(x)

    history, predicted = in_two_threads(first, second)
    assert len(history.epoch) == 1
    np.testing.assert_array_equal(predicted, model.predict(x))
    model.fit(x, y, epochs=2, verbose=0)    # the hold ends with fit


def test_copies_of_a_layer_in_use(rng):
    layer = fastrnn.LSTM(3, 4, seed=0)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    layer.step(x[:, 0])
    layer(x, training=True)
    twin = copy.deepcopy(layer)
    with pytest.raises(RuntimeError, match="training=True"):
        twin.backward(np.ones((2, 5, 4), np.float32))
    np.testing.assert_array_equal(twin.step(x[:, 0])[0], layer.step(x[:, 0])[0])
