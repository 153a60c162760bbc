"""fit / evaluate / predict on iterables of batches, the fastrnn.data pipelines (datasets,
samplers, bucketing, the prefetch thread), class labels that are not numbers, and what a second
fit trains."""
import doctest
import gc
import threading
import time
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn import data as data_module
from fastrnn.data import BatchSampler, BucketSampler, Loader, SequenceDataset, SequenceStream
from fastrnn.optim import SGD, Adam


def ragged(rng, n=48, features=3, low=1, high=9):
    lengths = rng.integers(low, high, size=n)
    seqs = [rng.standard_normal((k, features)) for k in lengths]
    y = np.array([int(s[-1, 0] > 0) for s in seqs])
    return seqs, y, lengths


def padded(seqs):
    return fastrnn.text.pad_sequences(seqs)


def classifier(seed=0, classes=2, features=3):
    return fastrnn.Sequential([
        fastrnn.GRU(features, 6, return_sequences=False, dtype="float64", seed=seed),
        fastrnn.Dense(6, classes, dtype="float64", seed=seed + 1),
    ])


def assert_same_weights(a, b):
    for name, p in a.parameters().items():
        np.testing.assert_array_equal(b.parameters()[name], p, err_msg=name)


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "fastrnn-prefetch"]


# ------------------------------------------------------------------ fit on iterables

def test_generator_and_loader_train_bit_for_bit_like_arrays(rng):
    seqs, y, lengths = ragged(rng)
    x, _ = padded(seqs)
    kw = dict(loss="cce", epochs=1, verbose=0)
    arrays = classifier()
    arrays.fit(x, y, lengths=lengths, optimizer=Adam(lr=0.01), batch_size=10, shuffle=False,
               **kw)

    def batches():
        for i in range(0, len(seqs), 10):
            yield x[i:i + 10], y[i:i + 10], lengths[i:i + 10]
    generated = classifier()
    generated.fit(batches(), optimizer=Adam(lr=0.01), **kw)
    assert_same_weights(arrays, generated)

    loaded = classifier()
    loaded.fit(Loader(SequenceDataset(seqs, y), batch_size=10), optimizer=Adam(lr=0.01), **kw)
    assert_same_weights(arrays, loaded)


def test_fit_pulls_one_batch_at_a_time(rng):
    """Bounded memory: batch k+1 is pulled only once batch k has been trained on."""
    seqs, y, lengths = ragged(rng)
    x, _ = padded(seqs)

    class CountingSGD(SGD):
        steps = 0

        def step(self, params, grads):
            CountingSGD.steps += 1
            return super().step(params, grads)

    pulled = []

    def batches():
        for k, i in enumerate(range(0, len(seqs), 8)):
            assert CountingSGD.steps == k        # every earlier batch was trained first
            pulled.append(k)
            yield x[i:i + 8], y[i:i + 8], lengths[i:i + 8]
    classifier().fit(batches(), loss="cce", optimizer=CountingSGD(lr=0.1), verbose=0)
    assert len(pulled) == 6 and CountingSGD.steps == 6


def test_one_shot_generator_needs_steps_per_epoch_for_several_epochs(rng):
    seqs, y, lengths = ragged(rng, n=16)
    x, _ = padded(seqs)

    def forever():
        while True:
            for i in range(0, 16, 4):
                yield x[i:i + 4], y[i:i + 4], lengths[i:i + 4]
    model = classifier()
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(forever(), loss="cce", optimizer="sgd", epochs=3, verbose=0)
    assert model.epochs_trained == 0
    history = model.fit(forever(), epochs=3, steps_per_epoch=2, verbose=0)
    assert history.epoch == [0, 1, 2] and model.epochs_trained == 3

    def short():
        yield from ((x[i:i + 4], y[i:i + 4], lengths[i:i + 4]) for i in range(0, 12, 4))
    with pytest.warns(UserWarning, match="ran out"), \
            pytest.warns(UserWarning, match="no batches.*training stopped"):
        history = classifier().fit(short(), loss="cce", optimizer="sgd", epochs=5,
                                   steps_per_epoch=2, verbose=0)
    assert history.epoch == [0, 1]      # 2 batches, then 1, then none: training stopped


def test_bad_batches_and_arguments_are_refused(rng):
    seqs, y, lengths = ragged(rng, n=8)
    loader = Loader(SequenceDataset(seqs, y), batch_size=4)
    model = classifier()
    with pytest.raises(TypeError, match=r"\(X, y\) or \(X, y, lengths\)"):
        model.fit(iter([seqs[0]]), loss="cce", optimizer="sgd", verbose=0)
    with pytest.raises(ValueError, match="y=None"):
        model.fit(loader, y, loss="cce", optimizer="sgd", verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(loader, loss="cce", optimizer="sgd", validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(loader, loss="cce", optimizer="sgd", verbose=0,
                  validation_data=iter(loader))
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(padded(seqs)[0], y, lengths=lengths, loss="cce", optimizer="sgd",
                  steps_per_epoch=2, verbose=0)
    assert model.epochs_trained == 0


def test_loader_validation_metrics_evaluate_and_predict_match_arrays(rng):
    seqs, y, lengths = ragged(rng)
    x, _ = padded(seqs)
    val = Loader(SequenceDataset(seqs, y), batch_size=7)
    model = classifier()
    history = model.fit(Loader(SequenceDataset(seqs, y), batch_size=8, shuffle=True),
                        loss="cce", optimizer=Adam(lr=0.01), epochs=2, verbose=0,
                        validation_data=val, metrics=("accuracy",))
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    whole = model.evaluate(x, y, lengths=lengths, metrics=("accuracy",))
    assert history["val_loss"][-1] == pytest.approx(whole["loss"], rel=1e-12)
    assert history["val_accuracy"][-1] == pytest.approx(whole["accuracy"], rel=1e-12)
    streamed = model.evaluate(val, metrics=("accuracy",))
    assert streamed == pytest.approx(whole, rel=1e-12)
    np.testing.assert_allclose(model.predict(val), model.predict(x, lengths=lengths),
                               rtol=1e-12)
    # predict takes X, (X, lengths) and (X, y, lengths) batches
    np.testing.assert_allclose(model.predict(iter([(x[:5], lengths[:5]), x[5:9]])),
                               model.predict(x[:9], lengths=np.r_[lengths[:5], [8] * 4]),
                               rtol=1e-12)


def test_sequence_outputs_from_a_loader_are_padded_to_the_longest(rng):
    seqs, _, lengths = ragged(rng, n=10)
    model = fastrnn.Sequential([fastrnn.LSTM(3, 4, dtype="float64", seed=0)])
    out = model.predict(Loader(SequenceDataset(seqs), batch_size=3))
    x, _ = padded(seqs)
    np.testing.assert_allclose(out, model.predict(x, lengths=lengths), rtol=1e-12)


def test_per_step_targets_from_a_loader_train_like_arrays(rng):
    seqs, _, lengths = ragged(rng, n=12)
    tags = [(s[:, 0] > 0).astype(np.int64) for s in seqs]
    x, _ = padded(seqs)
    y, _ = fastrnn.text.pad_sequences(tags)

    def tagger():
        return fastrnn.Sequential([fastrnn.LSTM(3, 5, dtype="float64", seed=0),
                                   fastrnn.Dense(5, 2, dtype="float64", seed=1)])
    a, b = tagger(), tagger()
    a.fit(x, y, lengths=lengths, loss="cce", optimizer="adam", batch_size=4, shuffle=False,
          verbose=0)
    b.fit(Loader(SequenceDataset(seqs, tags), batch_size=4), loss="cce", optimizer="adam",
          verbose=0)
    assert_same_weights(a, b)


def test_loader_resumes_bit_for_bit_and_its_seed_decides(tmp_path, rng):
    seqs, y, _ = ragged(rng)

    def loader(seed=3):
        return Loader(SequenceDataset(seqs, y), batch_size=8, shuffle=True, bucket=2, seed=seed)
    kw = dict(verbose=0)
    straight = classifier()
    straight.fit(loader(), loss="cce", optimizer=Adam(lr=0.01), epochs=4, **kw)
    again = classifier()
    again.fit(loader(), loss="cce", optimizer=Adam(lr=0.01), epochs=4, **kw)
    assert_same_weights(straight, again)

    first = classifier()
    first.fit(loader(), loss="cce", optimizer=Adam(lr=0.01), epochs=2, **kw)
    first.save(tmp_path / "ckpt.npz")
    resumed = fastrnn.load_model(tmp_path / "ckpt.npz")
    resumed.fit(loader(), epochs=4, **kw)        # a fresh loader: set_epoch(2), set_epoch(3)
    assert_same_weights(straight, resumed)

    other = classifier()
    other.fit(loader(seed=4), loss="cce", optimizer=Adam(lr=0.01), epochs=4, **kw)
    assert not np.array_equal(other.parameters()["0.weight_hh_l0"],
                              straight.parameters()["0.weight_hh_l0"])


# ------------------------------------------------------------------ datasets and samplers

def test_dataset_layouts_give_the_same_batches(tmp_path, rng):
    seqs, y, lengths = ragged(rng, n=20)
    x, _ = padded(seqs)
    np.save(tmp_path / "steps.npy", np.concatenate(seqs))
    np.save(tmp_path / "lengths.npy", lengths)
    np.save(tmp_path / "y.npy", y)
    layouts = [SequenceDataset(seqs, y), SequenceDataset(x, y, lengths=lengths),
               SequenceDataset.from_npy(tmp_path / "steps.npy", lengths, y),
               SequenceDataset.from_npy(tmp_path / "steps.npy", tmp_path / "lengths.npy",
                                        tmp_path / "y.npy")]
    rows = [3, 17, 0, 9]
    want = layouts[0].batch(rows)
    for dataset in layouts:
        assert len(dataset) == 20 and dataset.lengths.tolist() == lengths.tolist()
        for got, expected in zip(dataset.batch(rows), want):
            np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(dataset[5][0], seqs[5])
    assert want[0].shape == (4, int(lengths[rows].max()), 3)
    one_hot = SequenceDataset(seqs, [np.eye(2)[v] for v in y])      # equal lengths: rows
    np.testing.assert_array_equal(one_hot.batch(rows)[1], np.eye(2)[y[rows]])
    with pytest.raises(ValueError, match="per-step targets"):
        SequenceDataset(seqs, [np.zeros(n + 1) for n in lengths])
    with pytest.raises(ValueError, match="lengths add up to"):
        SequenceDataset.from_npy(tmp_path / "steps.npy", lengths[:-1])
    with pytest.raises(ValueError, match="targets must have one entry per sequence"):
        SequenceDataset(seqs, y[:-1])
    with pytest.raises(ValueError, match="lengths must be"):
        SequenceDataset(x, y, lengths=np.zeros(20, int))


def test_samplers_cover_every_sequence_once_per_epoch_and_their_seed_decides(rng):
    lengths = rng.integers(1, 100, size=103)
    for sampler in (BatchSampler(103, 8, shuffle=True, seed=1),
                    BucketSampler(lengths, 8, chunk=4, seed=1)):
        for epoch in range(3):
            batches = sampler.batches(epoch)
            assert len(batches) == len(sampler)
            assert sorted(np.concatenate(batches).tolist()) == list(range(103))
            assert all(len(b) <= 8 for b in batches)
        assert [b.tolist() for b in sampler.batches(2)] == \
            [b.tolist() for b in sampler.batches(2)]
        assert [b.tolist() for b in sampler.batches(1)] != \
            [b.tolist() for b in sampler.batches(2)]
    assert [b.tolist() for b in BucketSampler(lengths, 8, seed=1).batches(0)] != \
        [b.tolist() for b in BucketSampler(lengths, 8, seed=2).batches(0)]
    dropped = BucketSampler(lengths, 8, chunk=4, seed=1, drop_last=True)
    assert all(len(b) == 8 for b in dropped.batches(0))
    assert len(dropped.batches(0)) == len(dropped)


def padding_fraction(batches, lengths):
    valid = sum(int(lengths[b].sum()) for b in batches)
    computed = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1 - valid / computed


def test_bucketing_pads_much_less_than_random_batches(rng):
    lengths = np.clip(np.round(rng.lognormal(3.5, 0.9, size=2000)), 5, 400).astype(int)
    random_batches = BatchSampler(2000, 32, shuffle=True, seed=0).batches(0)
    bucketed = BucketSampler(lengths, 32, seed=0).batches(0)       # chunks of 50 batches
    assert padding_fraction(random_batches, lengths) > 0.7
    assert padding_fraction(bucketed, lengths) < 0.15
    fractions = [padding_fraction(BucketSampler(lengths, 32, chunk=chunk).batches(0), lengths)
                 for chunk in (2, 8, 32)]
    assert fractions == sorted(fractions, reverse=True)              # larger chunks pad less
    # the batches of a bucketed epoch come in a random order, not sorted by length
    longest = [int(lengths[b].max()) for b in bucketed]
    assert longest != sorted(longest)


def test_stream_batches_in_order_or_bucketed_by_chunk(rng):
    seqs, y, lengths = ragged(rng, n=23)
    stream = SequenceStream(lambda: zip(seqs, y))
    batches = list(Loader(stream, batch_size=5))
    assert [len(b[0]) for b in batches] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    bucketed = list(Loader(stream, batch_size=5, bucket=2, shuffle=True, seed=0))
    assert sorted(np.concatenate([b[2] for b in bucketed]).tolist()) == sorted(lengths.tolist())
    with pytest.raises(ValueError, match="bucket"):
        Loader(stream, batch_size=5, shuffle=True)
    with pytest.raises(TypeError, match="no length"):
        len(Loader(stream))
    model = classifier()
    history = model.fit(Loader(stream, batch_size=5), loss="cce", optimizer="sgd", epochs=2,
                        verbose=0)
    assert history.epoch == [0, 1]


# ------------------------------------------------------------------ the prefetch thread

def test_prefetch_gives_the_same_batches_and_holds_at_most_its_queue(rng):
    seqs, y, _ = ragged(rng, n=64)
    plain = list(Loader(SequenceDataset(seqs, y), batch_size=4, shuffle=True, seed=5))
    ahead = list(Loader(SequenceDataset(seqs, y), batch_size=4, shuffle=True, seed=5,
                        prefetch=3))
    assert len(plain) == len(ahead) == 16
    for a, b in zip(plain, ahead):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)

    read = []

    def source():
        for s, target in zip(seqs, y):
            read.append(1)
            yield s, target
    batches = iter(Loader(SequenceStream(source), batch_size=4, prefetch=2))
    next(batches)
    time.sleep(0.3)                              # the thread fills the queue, then waits
    # the batch taken + 2 queued + 1 made and waiting to be queued
    assert 2 * 4 <= len(read) <= (1 + 2 + 1) * 4
    batches.close()
    assert not prefetch_threads()


def test_prefetch_thread_raises_in_the_consumer_and_stops_when_dropped(rng):
    seqs, y, _ = ragged(rng, n=40)

    def failing():
        for i, (s, target) in enumerate(zip(seqs, y)):
            if i == 13:
                raise OSError("shard 2 is unreadable")
            yield s, target
    loader = Loader(SequenceStream(failing), batch_size=4, prefetch=2)
    with pytest.raises(OSError, match="shard 2 is unreadable"):
        list(loader)
    with pytest.raises(OSError, match="shard 2 is unreadable"):
        classifier().fit(loader, loss="cce", optimizer="sgd", verbose=0)
    assert not prefetch_threads()

    big = Loader(SequenceDataset(seqs, y), batch_size=2, prefetch=1)
    for i, batch in enumerate(big):              # the consumer stops early
        if i == 2:
            break
    gc.collect()
    time.sleep(0.1)
    assert not prefetch_threads()
    # fit stops its epochs early (steps_per_epoch) and by an early-stopping callback
    model = classifier()
    model.fit(big, loss="cce", optimizer="sgd", epochs=2, steps_per_epoch=3, verbose=0)

    class StopNow:
        def on_epoch_end(self, model, epoch, logs):
            model.stop_training = True
    model.fit(big, epochs=5, callbacks=[StopNow()], verbose=0)
    assert model.epochs_trained == 3
    assert not prefetch_threads()


def test_loader_arguments_are_checked(rng):
    seqs, y, _ = ragged(rng, n=8)
    dataset = SequenceDataset(seqs, y)
    for kwargs, error, words in [(dict(batch_size=0), ValueError, "batch_size"),
                                 (dict(prefetch=-1), ValueError, "prefetch"),
                                 (dict(bucket=0), ValueError, "bucket"),
                                 (dict(seed=1.5), TypeError, "seed"),
                                 (dict(shuffle="yes"), TypeError, "shuffle"),
                                 (dict(sampler=object()), TypeError, "sampler")]:
        with pytest.raises(error, match=words):
            Loader(dataset, **kwargs)
    with pytest.raises(TypeError, match="dataset"):
        Loader(seqs)


def test_the_data_module_examples_run():
    failures, tried = doctest.testmod(data_module, optionflags=doctest.ELLIPSIS)
    assert tried > 5 and failures == 0


# ------------------------------------------------------------------ class labels

def test_string_labels_round_trip_through_fit_predict_save_and_load(tmp_path, rng):
    seqs, y, lengths = ragged(rng)
    x, _ = padded(seqs)
    names = np.array(["cat", "dog", "eel"])
    labels = names[(y + (x[:, 0, 1] > 1)).astype(int)]        # three classes, as strings
    model = classifier(classes=3)
    model.fit(x, labels.tolist(), lengths=lengths, loss="cce", optimizer=Adam(lr=0.05),
              epochs=5, verbose=0, metrics=("accuracy",), validation_split=0.25)
    assert model.classes_.tolist() == ["cat", "dog", "eel"]
    predicted = model.predict_classes(x, lengths=lengths)
    assert predicted.dtype.kind == "U" and set(predicted) <= set(names)
    ids = model.predict(x, lengths=lengths).argmax(axis=1)
    np.testing.assert_array_equal(predicted, names[ids])
    scores = model.evaluate(x, labels, lengths=lengths, metrics=("accuracy",))
    assert scores["accuracy"] == pytest.approx(np.mean(predicted == labels))

    model.save(tmp_path / "m.npz")
    loaded = fastrnn.load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    np.testing.assert_array_equal(loaded.predict_classes(x, lengths=lengths), predicted)
    assert loaded.evaluate(x, labels, lengths=lengths) == pytest.approx(
        model.evaluate(x, labels, lengths=lengths))
    loaded.fit(x, labels, lengths=lengths, epochs=6, verbose=0)   # later fits take labels

    with pytest.raises(ValueError, match="'fox', which is not one of the model's classes_"):
        model.evaluate(x[:2], ["cat", "fox"], lengths=lengths[:2])
    with pytest.raises(ValueError, match="differ from the model's classes_"):
        model.fit(x, labels, lengths=lengths, classes=["a", "b", "c"], verbose=0)


def test_labels_train_like_their_ids(rng):
    seqs, y, lengths = ragged(rng)
    x, _ = padded(seqs)
    kw = dict(lengths=lengths, loss="cce", epochs=2, batch_size=8, verbose=0)
    ids, named = classifier(), classifier()
    ids.fit(x, y, optimizer=Adam(lr=0.01), **kw)
    named.fit(x, np.array(["no", "yes"])[y], optimizer=Adam(lr=0.01), **kw)
    assert_same_weights(ids, named)
    assert ids.classes_ is None                                    # numbers stay ids
    np.testing.assert_array_equal(ids.predict_classes(x, lengths=lengths),
                                  ids.predict(x, lengths=lengths).argmax(axis=1))

    binary = fastrnn.Sequential([fastrnn.GRU(3, 4, return_sequences=False, seed=0),
                                 fastrnn.Dense(4, 1, activation="sigmoid", seed=1)])
    binary.fit(x, np.array(["no", "yes"])[y], lengths=lengths, loss="bce",
               optimizer=Adam(lr=0.05), epochs=3, verbose=0)
    p = binary.predict(x, lengths=lengths)[:, 0]
    np.testing.assert_array_equal(binary.predict_classes(x, lengths=lengths),
                                  np.where(p > 0.5, "yes", "no"))


def test_labels_from_an_iterable_need_classes(rng):
    seqs, y, _ = ragged(rng)
    labels = np.array(["no", "yes"])[y]
    loader = Loader(SequenceDataset(seqs, labels), batch_size=8)
    with pytest.raises(ValueError, match="classes="):
        classifier().fit(loader, loss="cce", optimizer="sgd", verbose=0)
    model = classifier()
    model.fit(loader, loss="cce", optimizer="sgd", verbose=0, classes=["no", "yes"])
    assert model.classes_.tolist() == ["no", "yes"]
    assert set(model.predict_classes(loader)) <= {"no", "yes"}
    with pytest.raises(ValueError, match="one output per class"):
        classifier(classes=3).fit(loader, loss="cce", optimizer="sgd", classes=["no", "yes"])
    with pytest.raises(TypeError, match="cross-entropy"):
        classifier(classes=1).fit(padded(seqs)[0], labels, loss="mse", optimizer="sgd")


def test_predict_classes_needs_a_classifier(rng):
    model = fastrnn.Sequential([fastrnn.GRU(3, 4, return_sequences=False, seed=0),
                                fastrnn.Dense(4, 1, activation="tanh", seed=1)])
    with pytest.raises(ValueError, match="classifier"):
        model.predict_classes(rng.standard_normal((2, 3, 3)))


# ------------------------------------------------------------------ a second fit

def test_a_second_fit_warns_when_it_has_nothing_to_train_and_trains_when_asked(rng):
    seqs, y, lengths = ragged(rng, n=16)
    x, _ = padded(seqs)
    model = classifier()
    model.fit(x, y, lengths=lengths, loss="cce", optimizer="sgd", epochs=5, verbose=0)
    with pytest.warns(UserWarning, match=r"fit trained no epochs: epochs=5 .*initial_epoch=5"
                                         r".*pass epochs=10"):
        history = model.fit(x, y, lengths=lengths, epochs=5, verbose=0)
    assert history.epoch == [] and model.epochs_trained == 5
    history = model.fit(x, y, lengths=lengths, epochs=10, verbose=0)
    assert history.epoch == [5, 6, 7, 8, 9] and model.epochs_trained == 10
    history = model.fit(x, y, lengths=lengths, epochs=2, initial_epoch=0, verbose=0)  # Keras'
    assert history.epoch == [0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, y, lengths=lengths, epochs=4, verbose=0)    # 2 -> 4: no warning
