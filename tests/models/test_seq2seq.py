"""EncoderDecoder with and without attention (issue 15, items 1 and 3): exact gradients,
the two backends, greedy and beam-search decoding, padding, saving, callbacks, arguments."""
import itertools

import numpy as np
import pytest

import fastrnn
from fastrnn import engine
from fastrnn.callbacks import EarlyStopping, ModelCheckpoint
from fastrnn.layers import CrossAttention
from fastrnn.optim import SGD, Adam
from conftest import numerical_gradient, rel_err

PAD, BOS, EOS = 0, 1, 2
#: (attention, attention_score, cell, num_layers): every score, every cell, a stacked model
CONFIGS = [(None, None, "gru", 1), ("bahdanau", None, "lstm", 1), ("luong", "general", "gru", 2),
           ("luong", "dot", "rnn", 1)]


def model_of(attention, score=None, cell="gru", num_layers=1, vocab=7, embedding_dim=3,
             hidden_size=4, dtype="float64", backend="reference", seed=0):
    return fastrnn.EncoderDecoder(vocab, vocab, embedding_dim, hidden_size, cell=cell,
                                  num_layers=num_layers, bos_id=BOS, eos_id=EOS, dtype=dtype,
                                  seed=seed, backend=backend, attention=attention,
                                  attention_score=score)


def pairs(rng, n=3, src_steps=5, tgt_steps=4, vocab=7):
    """Padded sources and targets of different lengths (junk, not padding, past the ends)."""
    src = rng.integers(3, vocab, (n, src_steps))
    tgt = rng.integers(3, vocab, (n, tgt_steps))
    src_len = np.array([src_steps] + list(rng.integers(1, src_steps + 1, n - 1)))
    tgt_len = np.array([tgt_steps] + list(rng.integers(1, tgt_steps + 1, n - 1)))
    tgt[np.arange(n), tgt_len - 1] = EOS
    return src, src_len, tgt, tgt_len


def reverse_data(rng, n, low=2, high=6, digits=6):
    src = [rng.integers(3, 3 + digits, rng.integers(low, high + 1)) for _ in range(n)]
    return src, [np.append(s[::-1], EOS) for s in src]


@pytest.fixture(scope="module")
def trained():
    """A small attention model trained a little on reversing digit strings (so that its
    outputs are neither uniform nor immediately <eos>), with held-out sources."""
    rng = np.random.default_rng(7)
    src, tgt = reverse_data(rng, 300)
    model = fastrnn.EncoderDecoder(9, 9, 8, 16, attention="luong", bos_id=BOS, eos_id=EOS,
                                   seed=1)
    model.fit(src, tgt, optimizer=Adam(lr=0.02), epochs=4, batch_size=32, verbose=0)
    return model, reverse_data(rng, 40)[0]


# ---------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("attention, score, cell, num_layers", CONFIGS)
def test_gradients_match_finite_differences(attention, score, cell, num_layers, rng):
    model = model_of(attention, score, cell, num_layers)
    for name, p in model.parameters().items():
        if name.startswith("attention."):
            p *= 3.0                        # scores that vary, so the softmax is not flat
    src, src_len, tgt, tgt_len = pairs(rng)
    model._set_training("cce", "sgd")
    loss = model._train_step(src, src_len, tgt, tgt_len)
    grads = {name: g.copy() for name, g in model.grads().items()}
    assert set(grads) == set(model.parameters())
    valid = tgt_len.sum()
    f = lambda: -model.log_likelihood(src, tgt, src_len, tgt_len).sum() / valid   # noqa: E731
    assert loss == pytest.approx(f(), rel=1e-12)
    for name, p in model.parameters().items():
        want = numerical_gradient(f, p, eps=1e-5)
        assert np.abs(want).max() > 1e-6, name
        # (absolute errors below 2e-10: the rounding noise of the differences)
        assert rel_err(grads[name], want, floor=1e-4) < 2e-6, name


@pytest.mark.skipif(not engine.AVAILABLE, reason="compiled engine not built")
@pytest.mark.parametrize("attention, score, cell, num_layers", CONFIGS)
def test_compiled_backend_equals_reference(attention, score, cell, num_layers, rng):
    src, src_len, tgt, tgt_len = pairs(rng, n=6, src_steps=7, tgt_steps=6)
    out = {}
    for backend in ("reference", "compiled"):
        model = model_of(attention, score, cell, num_layers, backend=backend, hidden_size=8)
        model._set_training("cce", "sgd")
        loss = model._train_step(src, src_len, tgt, tgt_len)
        out[backend] = (loss, model.grads(), model.log_likelihood(src, tgt, src_len, tgt_len),
                        model.predict(src, src_len, max_length=6, beam_width=3))
    (loss_r, grads_r, ll_r, pred_r), (loss_c, grads_c, ll_c, pred_c) = out.values()
    assert loss_c == pytest.approx(loss_r, rel=1e-12)
    for name, g in grads_r.items():
        assert rel_err(grads_c[name], g) < 1e-10, name
    np.testing.assert_allclose(ll_c, ll_r, rtol=1e-12)
    np.testing.assert_array_equal(pred_c, pred_r)


def test_attention_none_keeps_its_layers_and_initial_weights():
    plain, attentive = model_of(None), model_of("bahdanau")
    assert [name for name, _ in plain._named_layers()] == [
        "source_embedding", "encoder", "target_embedding", "decoder", "output"]
    assert plain.attention is None and plain.combine is None
    for name, p in plain.parameters().items():      # the attention's seeds are drawn after
        np.testing.assert_array_equal(attentive.parameters()[name], p)


# ---------------------------------------------------------------------------- decoding

def test_greedy_equals_beam_search_of_width_one(trained):
    model, sources = trained
    tokens, weights = model.predict(sources, max_length=8, return_attention=True)
    beam_tokens, beam_weights = model.predict(sources, max_length=8, beam_width=1,
                                              return_attention=True)
    assert (tokens == EOS).any(axis=1).mean() > 0.9       # it writes sequences that end
    np.testing.assert_array_equal(beam_tokens, tokens)
    np.testing.assert_allclose(beam_weights, weights, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(model.predict(sources, max_length=8, beam_width=1,
                                                length_penalty=1.5), tokens)


def _decoded(tokens):
    """Decoded rows as target sequences (up to and including eos) and their lengths."""
    lengths = np.array([list(row).index(EOS) + 1 if EOS in row else len(row)
                        for row in tokens])
    return [row[:n] for row, n in zip(tokens, lengths)], lengths


def test_beam_search_is_at_least_as_likely_as_greedy(trained):
    model, sources = trained
    greedy = model.predict(sources, max_length=8)
    beam = model.predict(sources, max_length=8, beam_width=4)
    ll_greedy = model.log_likelihood(sources, _decoded(greedy)[0])
    ll_beam = model.log_likelihood(sources, _decoded(beam)[0])
    assert (ll_beam >= ll_greedy - 1e-5).all()
    assert (ll_beam > ll_greedy + 1e-3).any()      # and it finds better ones than greedy does


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_finds_the_best_sequence_of_exhaustive_search(alpha):
    """With a beam as wide as every prefix, beam search is exact: its choice is the best of
    all sequences by ``log p / ((5 + length) / 6) ** alpha``."""
    vocab, steps = 5, 3
    model = model_of("bahdanau", vocab=vocab, hidden_size=5, seed=3)
    source = np.array([[3, 4, 4, 3]])
    hypotheses = []
    for tokens in itertools.product(range(vocab), repeat=steps):
        n = tokens.index(EOS) + 1 if EOS in tokens else steps
        hypotheses.append((tokens[:n] + (PAD,) * (steps - n), n))
    hypotheses = sorted(set(hypotheses))
    targets = np.array([h for h, _ in hypotheses])
    lengths = np.array([n for _, n in hypotheses])
    ll = model.log_likelihood(np.repeat(source, len(targets), axis=0), targets,
                              target_lengths=lengths)
    rank = ll / ((5.0 + lengths) / 6.0) ** alpha
    best = targets[np.argmax(rank)]
    assert np.sort(rank)[-1] > np.sort(rank)[-2] + 1e-9       # one best, no tie
    found = model.predict(source, max_length=steps, beam_width=vocab ** (steps - 1),
                          length_penalty=alpha)
    np.testing.assert_array_equal(found[0], best)


def reference_beam_search(model, source, k, alpha, max_length, vocab):
    """Beam search written out hypothesis by hypothesis, scored by teacher forcing
    (``log_likelihood`` of each prefix): a finished hypothesis keeps its place in the beam,
    the candidates are ranked by ``log p / ((5 + length) / 6) ** alpha``."""
    penalty = lambda n: ((5.0 + n) / 6.0) ** alpha                     # noqa: E731
    beams = [((), 0.0, False)]
    for _ in range(max_length):
        candidates = []
        for tokens, score, done in beams:
            if done:
                candidates.append((tokens, score, True))
                continue
            extended = [tokens + (v,) for v in range(vocab)]
            ll = model.log_likelihood(np.repeat(source, vocab, axis=0), np.array(extended))
            candidates += [(e, float(l), e[-1] == EOS) for e, l in zip(extended, ll)]
        beams = sorted(candidates, key=lambda c: -c[1] / penalty(len(c[0])))[:k]
        if all(done for _, _, done in beams):
            break
    return max(beams, key=lambda c: c[1] / penalty(len(c[0])))[0]


@pytest.mark.parametrize("k, alpha", [(2, 0.0), (3, 0.0), (2, 2.0), (3, 4.0)])
def test_beam_search_equals_the_search_written_out(k, alpha):
    vocab, steps = 5, 4
    model = model_of("luong", vocab=vocab, hidden_size=5, seed=13)
    for p in model.parameters().values():
        p *= 2.0                                    # sharper, more varied distributions
    # <eos> likelier: finished hypotheses then compete with longer live ones for the beam
    # (where the length penalty decides which stay; ranking by log p alone fails here)
    model.output.parameters()["bias"][EOS] += 1.0
    sources = np.random.default_rng(4).integers(3, vocab, (6, 4))
    found = model.predict(sources, max_length=steps, beam_width=k, length_penalty=alpha)
    for source, row in zip(sources, found):
        want = reference_beam_search(model, source[None], k, alpha, steps, vocab)
        np.testing.assert_array_equal(row[:len(want)], want)
        assert (row[len(want):] == 0).all()


def test_attention_weights_rows_sum_to_one_until_eos(trained):
    model, sources = trained
    tokens, weights = model.predict(sources, max_length=8, beam_width=3,
                                    return_attention=True)
    lengths = np.array([len(s) for s in sources])
    assert weights.shape == (len(sources), 8, lengths.max())
    _, decoded_lengths = _decoded(tokens)
    steps = np.arange(8)[None, :] < decoded_lengths[:, None]
    np.testing.assert_allclose(weights.sum(axis=2)[steps], 1.0, rtol=1e-5)
    assert (weights[~steps] == 0).all()
    padded = np.arange(lengths.max())[None, None, :] >= lengths[:, None, None]
    assert (weights[np.broadcast_to(padded, weights.shape)] == 0).all()
    # a trained reverser looks at the source from its end: output t at source length - 1 - t
    first = weights[:, 0].argmax(axis=1)
    assert (first == lengths - 1).mean() > 0.8


@pytest.mark.parametrize("attention, score, cell, num_layers", CONFIGS[1:])
def test_padded_source_steps_get_no_weight_and_change_nothing(attention, score, cell,
                                                              num_layers, rng):
    model = model_of(attention, score, cell, num_layers)
    src, src_len, tgt, tgt_len = pairs(rng, n=4, src_steps=6)
    other = src.copy()
    past = np.arange(src.shape[1])[None, :] >= src_len[:, None]
    other[past] = rng.integers(3, 7, past.sum())            # other junk past the lengths
    other[past & (rng.random(past.shape) < 0.5)] = PAD
    tokens, weights = model.predict(src, src_len, max_length=5, return_attention=True)
    assert (weights[np.broadcast_to(past[:, None, :], weights.shape)] == 0).all()
    for predict in (dict(), dict(beam_width=3)):
        a = model.predict(src, src_len, max_length=5, return_attention=True, **predict)
        b = model.predict(other, src_len, max_length=5, return_attention=True, **predict)
        c = model.predict(other, src_len, max_length=5, return_attention=True, batch_size=1,
                          **predict)                # each alone, trimmed to its own length
        for got in (b, c):
            np.testing.assert_array_equal(got[0], a[0])
            np.testing.assert_allclose(got[1], a[1], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(model.log_likelihood(other, tgt, src_len, tgt_len),
                                  model.log_likelihood(src, tgt, src_len, tgt_len))
    model._set_training("cce", "sgd")
    grads = []
    for s in (src, other):
        model._train_step(s, src_len, tgt, tgt_len)
        grads.append({k: g.copy() for k, g in model.grads().items()})
    for name, g in grads[0].items():
        np.testing.assert_array_equal(grads[1][name], g, err_msg=name)
    # and each sequence alone, unpadded, gets what it got in the padded batch
    for i in range(len(src)):
        alone = model.log_likelihood(src[i:i + 1, :src_len[i]], tgt[i:i + 1, :tgt_len[i]])
        np.testing.assert_allclose(alone, model.log_likelihood(src, tgt, src_len,
                                                               tgt_len)[i], rtol=1e-12)


# ---------------------------------------------------------------------------- a full model

def test_evaluate_and_summary(trained):
    model, _ = trained
    rng = np.random.default_rng(3)
    src, tgt = reverse_data(rng, 20)
    logs = model.evaluate(src, tgt, metrics=("accuracy",))
    lengths = np.array([len(t) for t in tgt])
    assert logs["loss"] == pytest.approx(-model.log_likelihood(src, tgt).sum() / lengths.sum(),
                                         rel=1e-5)
    assert 0.5 < logs["accuracy"] <= 1.0
    text = model.summary(print_fn=None)
    for name in ("source_embedding Embedding", "encoder GRU", "attention CrossAttention",
                 "combine Dense", "output Dense"):
        assert name in text
    assert f"total parameters: {sum(p.size for p in model.parameters().values())}" in text
    assert repr(model).startswith("EncoderDecoder(source_vocab=9, target_vocab=9")


@pytest.mark.parametrize("attention", [None, "bahdanau", "luong"])
def test_save_load_round_trip_and_resume_bit_for_bit(attention, tmp_path):
    rng = np.random.default_rng(5)
    src, tgt = reverse_data(rng, 64)
    kw = dict(batch_size=16, verbose=0, seed=3, clip_norm=5.0)

    def make():
        return fastrnn.EncoderDecoder(9, 9, 6, 8, attention=attention, bos_id=BOS,
                                      eos_id=EOS, seed=2)

    straight = make()
    straight.fit(src, tgt, optimizer=Adam(lr=0.01), epochs=4, **kw)
    resumed = make()
    resumed.info = {"task": "reverse"}
    path = tmp_path / "s2s-{epoch}.npz"
    resumed.fit(src, tgt, optimizer=Adam(lr=0.01), epochs=2,
                callbacks=[ModelCheckpoint(path)], **kw)
    loaded = fastrnn.load_model(tmp_path / "s2s-2.npz")
    assert isinstance(loaded, fastrnn.EncoderDecoder) and loaded.epochs_trained == 2
    assert loaded.get_config() == resumed.get_config() and loaded.info == {"task": "reverse"}
    assert isinstance(loaded.optimizer, Adam)
    for options in (dict(), dict(beam_width=3, length_penalty=0.6)):
        np.testing.assert_array_equal(loaded.predict(src, **options),
                                      resumed.predict(src, **options))
    loaded.fit(src, tgt, epochs=4, **kw)
    for name, p in straight.parameters().items():
        np.testing.assert_array_equal(loaded.parameters()[name], p, err_msg=name)


def test_a_model_file_that_does_not_fit_is_refused(tmp_path):
    from fastrnn.io import load_bundle, save_bundle

    path = tmp_path / "m.npz"
    model_of("bahdanau").save(path)
    arrays, meta = load_bundle(path)
    assert meta["model"] == "EncoderDecoder" and meta["config"]["attention"] == "bahdanau"
    meta["config"].update(attention="luong", attention_score="general")   # other weights
    save_bundle(path, arrays, meta)
    with pytest.raises(ValueError, match="do not match the architecture"):
        fastrnn.load_model(path)
    meta["config"]["hidden_size"] = 10 ** 6              # more than the file holds
    save_bundle(path, arrays, meta)
    with pytest.raises(ValueError, match="more parameters than the file holds"):
        fastrnn.load_model(path)
    meta["config"] = {**meta["config"], "attention": "sparse", "hidden_size": 4}
    save_bundle(path, arrays, meta)
    with pytest.raises(ValueError, match="attention must be one of"):
        fastrnn.load_model(path)


def test_early_stopping_and_best_checkpoint_on_an_encoder_decoder(tmp_path):
    rng = np.random.default_rng(6)
    src, tgt = reverse_data(rng, 96)
    val = reverse_data(rng, 32)
    model = fastrnn.EncoderDecoder(9, 9, 6, 8, attention="bahdanau", bos_id=BOS, eos_id=EOS,
                                   seed=0)
    stop = EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    best = ModelCheckpoint(tmp_path / "best.npz", monitor="val_loss", save_best_only=True)
    # a huge learning rate makes the validation loss worse after the first epochs
    history = model.fit(src, tgt, optimizer=SGD(lr=30.0), epochs=30, batch_size=8,
                        validation_data=val, metrics=("accuracy",), callbacks=[stop, best],
                        verbose=0)
    assert stop.stopped_epoch is not None and len(history.epoch) < 30
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert min(history["val_loss"]) == stop.best == best.best
    saved = fastrnn.load_model(tmp_path / "best.npz")
    for name, p in model.parameters().items():           # the best weights, restored and saved
        np.testing.assert_array_equal(saved.parameters()[name], p)
    assert model.evaluate(*val)["loss"] == pytest.approx(stop.best, rel=1e-6)


# ---------------------------------------------------------------------------- the heat map

def test_attention_heatmap_writes_a_png(trained, tmp_path):
    pytest.importorskip("matplotlib")
    from fastrnn.plot import attention_heatmap

    model, sources = trained
    tokens, weights = model.predict(sources[:1], max_length=8, return_attention=True)
    n_in, n_out = len(sources[0]), _decoded(tokens)[1][0]
    path = tmp_path / "attention.png"
    attention_heatmap(path, weights[0, :n_out, :n_in], [str(t) for t in sources[0]],
                      [str(t) for t in tokens[0, :n_out]], title="reverse")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="source_labels must have one label per step"):
        attention_heatmap(path, weights[0, :n_out, :n_in], "x", None)
    with pytest.raises(ValueError, match=r"weights must be finite values in \[0, 1\]"):
        attention_heatmap(path, [[0.5, 2.0]])
    with pytest.raises(ValueError, match="weights must be a non-empty"):
        attention_heatmap(path, np.zeros(3))


# ---------------------------------------------------------------------------- arguments

def test_arguments_are_checked_and_named():
    with pytest.raises(ValueError, match="attention must be one of None, 'bahdanau', 'luong'"):
        model_of("additive")
    with pytest.raises(ValueError, match="attention_score must be one of 'general', 'dot' "
                                         "with attention='luong'"):
        model_of("luong", "additive")
    with pytest.raises(ValueError, match="attention_score must be one of None"):
        model_of(None, "dot")
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):
        fastrnn.EncoderDecoder(5, 5, 3, 0)
    with pytest.raises(TypeError, match="eos_id must be an integer"):
        fastrnn.EncoderDecoder(5, 5, 3, 4, eos_id=2.0)
    with pytest.raises(ValueError, match="cell must be one of"):
        fastrnn.EncoderDecoder(5, 5, 3, 4, cell="transformer")
    model, src = model_of("luong"), [[3, 4, 5]]
    with pytest.raises(ValueError, match="beam_width must be >= 1"):
        model.predict(src, beam_width=0)
    with pytest.raises(TypeError, match="beam_width must be an integer"):
        model.predict(src, beam_width=2.5)
    with pytest.raises(ValueError, match="length_penalty"):
        model.predict(src, beam_width=2, length_penalty=-1.0)
    with pytest.raises(TypeError, match="return_attention"):
        model.predict(src, return_attention="yes")
    with pytest.raises(ValueError, match="return_attention=True needs a model with attention"):
        model_of(None).predict(src, return_attention=True)
    with pytest.raises(ValueError, match="source must have shape"):
        model.predict([3, 4, 5])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.predict(src, batch_size=0)
    with pytest.raises(ValueError, match="source and target must have as many sequences"):
        model.evaluate([[3, 4]], [[3, 2], [4, 2]])
    with pytest.raises(TypeError, match="validation_data must be"):
        model.fit([[3, 4]], [[4, 2]], optimizer="sgd", validation_data=([[3, 4]],), verbose=0)
    with pytest.raises(ValueError, match="metrics"):
        model.fit([[3, 4]], [[4, 2]], optimizer="sgd", metrics=("nonsense",), verbose=0)
    with pytest.raises(ValueError, match="score must be one of"):
        CrossAttention(4, score="cosine")


def test_cross_attention_on_its_own(rng):
    """The user calls of the attention: validated, masked, and the backward pass of the
    same numbers as the model's (finite differences through the context)."""
    layer = CrossAttention(3, "additive", dtype="float64", seed=0)
    query, memory = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 5, 3))
    context, weights = layer(query, memory, memory_lengths=[5, 2], training=True)
    assert context.shape == (2, 4, 3) and (weights[1, :, 2:] == 0).all()
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0)
    dcontext = rng.standard_normal(context.shape)
    dquery, dmemory = layer.backward(dcontext)
    f = lambda: float((layer(query, memory, [5, 2])[0] * dcontext).sum())   # noqa: E731
    assert rel_err(dquery, numerical_gradient(f, query)) < 1e-7
    assert rel_err(dmemory, numerical_gradient(f, memory)) < 1e-7
    assert (dmemory[1, 2:] == 0).all()
    with pytest.raises(ValueError, match="memory must have shape"):
        layer(query, memory[:1])
    layer(query, memory, training=True)
    with pytest.raises(ValueError, match="dcontext must have shape"):
        layer.backward(dcontext[:, :2])
