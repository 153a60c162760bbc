"""Callbacks: the hooks (order, counts, logs), stopping from any hook, learning-rate schedules
driven by fit (per epoch and per step), the callbacks' state in model files, and training
resumed from every epoch's checkpoint ending bit for bit where uninterrupted training ends."""
import json
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn.callbacks import (Callback, EarlyStopping, LearningRateScheduler,
                               ModelCheckpoint)
from fastrnn.data import Loader, SequenceDataset
from fastrnn.optim import (SGD, Adam, CosineAnnealingLR, LinearLR, ReduceLROnPlateau,
                           SequentialLR, StepLR)


def sequence_data(rng, n=48, T=8):
    x = rng.standard_normal((n, T, 3))
    lengths = rng.integers(1, T + 1, size=n)
    y = (x[np.arange(n), lengths - 1, 0] > 0).astype(np.int64)
    return x, y, lengths


def classifier(dtype="float64", seed=0):
    """With dropout (its generators' states must resume too)."""
    return fastrnn.Sequential([
        fastrnn.LSTM(3, 8, return_sequences=False, dtype=dtype, seed=seed),
        fastrnn.Dropout(0.2, seed=seed),
        fastrnn.Dense(8, 2, dtype=dtype, seed=seed),
    ])


class Recorder(Callback):
    """Records every hook call as ``(hook, index or None, sorted log keys)``."""

    def __init__(self):
        self.calls = []

    def _record(self, hook, index, logs):
        self.calls.append((hook, index, tuple(sorted(logs))))

    def on_train_begin(self, model, logs):
        self._record("train_begin", None, logs)

    def on_train_end(self, model, logs):
        self._record("train_end", None, logs)

    def on_epoch_begin(self, model, epoch, logs):
        self._record("epoch_begin", epoch, logs)

    def on_epoch_end(self, model, epoch, logs):
        self._record("epoch_end", epoch, logs)

    def on_train_batch_begin(self, model, batch, logs):
        self._record("batch_begin", batch, logs)

    def on_train_batch_end(self, model, batch, logs):
        self._record("batch_end", batch, logs)


# ------------------------------------------------------------------ hooks

def test_hooks_are_called_in_order_with_their_logs(rng):
    x, y, lengths = sequence_data(rng, n=40)
    recorder = Recorder()
    model = classifier()
    model.fit(x, y, lengths=lengths, loss="cce", optimizer=Adam(lr=0.01), epochs=2,
              batch_size=16, validation_split=0.2, metrics=("accuracy",), verbose=0,
              callbacks=[recorder])
    epoch_keys = ("accuracy", "loss", "val_accuracy", "val_loss")
    expected = [("train_begin", None, ())]
    for epoch in range(2):
        expected.append(("epoch_begin", epoch, ()))
        for batch in range(2):              # 32 training rows in batches of 16
            expected += [("batch_begin", batch, ()), ("batch_end", batch, ("loss", "size"))]
        expected.append(("epoch_end", epoch, epoch_keys))
    expected.append(("train_end", None, epoch_keys))
    assert recorder.calls == expected

    # a second fit goes on counting the epochs
    recorder.calls.clear()
    model.fit(x, y, lengths=lengths, epochs=3, batch_size=32, verbose=0, callbacks=[recorder])
    assert [c[:2] for c in recorder.calls] == [
        ("train_begin", None), ("epoch_begin", 2), ("batch_begin", 0), ("batch_end", 0),
        ("batch_begin", 1), ("batch_end", 1), ("epoch_end", 2), ("train_end", None)]


def test_batch_logs_hold_the_batch_loss_and_size(rng):
    x, y, lengths = sequence_data(rng, n=40)
    seen = []

    class Batches:                          # a duck-typed callback with one hook
        def on_train_batch_end(self, model, batch, logs):
            seen.append((batch, logs["size"], logs["loss"]))

    history = classifier().fit(x, y, lengths=lengths, loss="cce", optimizer=Adam(lr=0.01),
                               epochs=1, batch_size=16, verbose=0, callbacks=[Batches()])
    assert [(b, s) for b, s, _ in seen] == [(0, 16), (1, 16), (2, 8)]
    mean = sum(s * loss for _, s, loss in seen) / 40
    assert history["loss"][0] == pytest.approx(mean, rel=1e-12)


def test_objects_with_only_some_hooks_and_the_old_protocol_work(rng):
    x, y, lengths = sequence_data(rng, n=16)
    ends, begins = [], []

    class OldStyle:                         # fastrnn's callbacks before the hooks
        def on_epoch_end(self, model, epoch, logs):
            ends.append(epoch)

    class BeginOnly:
        def on_train_begin(self, model, logs):
            begins.append(model.epochs_trained)

    classifier().fit(x, y, lengths=lengths, loss="cce", optimizer="sgd", epochs=3, verbose=0,
                     callbacks=[OldStyle(), BeginOnly(), Callback()])
    assert ends == [0, 1, 2] and begins == [0]


def test_callbacks_without_hooks_are_refused_before_training(rng):
    x, y, lengths = sequence_data(rng, n=16)
    model = classifier()
    opt = SGD(lr=0.1)
    with pytest.raises(TypeError, match=r"callbacks\[1\] has none of the callback methods"):
        model.fit(x, y, lengths=lengths, loss="cce", optimizer=opt, verbose=0,
                  callbacks=[Callback(), object()])
    with pytest.raises(TypeError, match=r"LearningRateScheduler\(schedule\)"):
        model.fit(x, y, lengths=lengths, loss="cce", optimizer=opt, verbose=0,
                  callbacks=[StepLR(opt, 2)])
    with pytest.raises(TypeError, match="callbacks must be a list"):
        model.fit(x, y, lengths=lengths, loss="cce", optimizer=opt, verbose=0, callbacks=3)
    assert model.epochs_trained == 0


@pytest.mark.parametrize("where", ["batch", "epoch_begin", "train_begin"])
def test_stop_training_from_any_hook(rng, where):
    """From a batch's end or an epoch's beginning: the epoch ends after that batch (logged and
    called back), as in Keras; from the training's beginning: before any epoch."""
    x, y, lengths = sequence_data(rng, n=40)
    recorder = Recorder()

    class Stopper(Callback):
        def on_train_begin(self, model, logs):
            model.stop_training = where == "train_begin"

        def on_epoch_begin(self, model, epoch, logs):
            model.stop_training = where == "epoch_begin" and epoch == 1

        def on_train_batch_end(self, model, batch, logs):
            if where == "batch" and batch == 1:
                model.stop_training = True

    model = classifier()
    history = model.fit(x, y, lengths=lengths, loss="cce", optimizer=Adam(lr=0.01), epochs=4,
                        batch_size=8, verbose=0, callbacks=[Stopper(), recorder])
    hooks = [c[:2] for c in recorder.calls]
    if where == "train_begin":
        assert hooks == [("train_begin", None), ("train_end", None)]
        assert model.epochs_trained == 0 and history.epoch == []
    elif where == "epoch_begin":
        assert history.epoch == [0, 1] and hooks[-2:] == [("epoch_end", 1), ("train_end", None)]
        assert hooks.count(("batch_end", 4)) == 1                # epoch 1: after one batch
        assert hooks[-5:-2] == [("epoch_begin", 1), ("batch_begin", 0), ("batch_end", 0)]
    else:
        assert history.epoch == [0] and model.epochs_trained == 1
        assert hooks == [("train_begin", None), ("epoch_begin", 0), ("batch_begin", 0),
                         ("batch_end", 0), ("batch_begin", 1), ("batch_end", 1),
                         ("epoch_end", 0), ("train_end", None)]


def test_checkpoints_run_after_the_other_callbacks_of_an_epoch(tmp_path, rng):
    """Whatever the order given, the file of epoch k holds the schedule stepped at the end of
    epoch k (and the early-stopping counters of epoch k)."""
    x, y, lengths = sequence_data(rng, n=16)
    opt = SGD(lr=1.0)
    model = classifier()
    model.fit(x, y, lengths=lengths, loss="cce", optimizer=opt, epochs=2, verbose=0,
              callbacks=[ModelCheckpoint(tmp_path / "m{epoch}.npz"),
                         LearningRateScheduler(StepLR(opt, step_size=1, gamma=0.5)),
                         EarlyStopping(monitor="loss", patience=5)])
    for epoch, lr in ((1, 0.5), (2, 0.25)):
        loaded = fastrnn.load_model(tmp_path / f"m{epoch}.npz")
        assert loaded.optimizer.lr == lr
        classes = [entry["class"] for entry in loaded.callback_states]
        assert classes == ["LearningRateScheduler", "EarlyStopping"]   # (no save_best_only)
        assert loaded.callback_states[0]["state"]["schedule"]["state"]["last_epoch"] == epoch


# ------------------------------------------------------------------ schedules in fit

def test_schedule_per_step_warms_up_over_updates(rng):
    x, y, lengths = sequence_data(rng, n=40)
    opt = SGD(lr=0.1)
    seen = []

    class Lr(Callback):
        def on_train_batch_begin(self, model, batch, logs):
            seen.append(model.optimizer.lr)

    warmup = LinearLR(opt, start_factor=0.25, total_iters=4)
    classifier().fit(x, y, lengths=lengths, loss="cce", optimizer=opt, epochs=2, batch_size=8,
                     verbose=0, callbacks=[LearningRateScheduler(warmup, interval="step"),
                                           Lr()])
    expected = SGD(lr=0.1)
    reference = LinearLR(expected, start_factor=0.25, total_iters=4)
    lrs = [expected.lr]
    for _ in range(9):
        reference.step()
        lrs.append(expected.lr)
    assert seen == lrs and warmup.last_epoch == 10
    with pytest.raises(ValueError, match="interval must be 'epoch' for ReduceLROnPlateau"):
        LearningRateScheduler(ReduceLROnPlateau(opt), interval="step")
    with pytest.raises(ValueError, match="interval must be one of"):
        LearningRateScheduler(warmup, interval="batch")
    with pytest.raises(TypeError, match="schedule must be a learning-rate schedule"):
        LearningRateScheduler(lambda epoch: 0.1)


def test_a_schedule_of_another_optimizer_is_refused(rng):
    x, y, lengths = sequence_data(rng, n=16)
    schedule = LearningRateScheduler(StepLR(SGD(lr=0.1), step_size=1))
    with pytest.raises(ValueError, match="built on another optimizer than the model's"):
        classifier().fit(x, y, lengths=lengths, loss="cce", optimizer=SGD(lr=0.1), verbose=0,
                         callbacks=[schedule])


# ------------------------------------------------------------------ state round trips

def test_callback_states_round_trip_through_json():
    opt = SGD(lr=0.1)
    stop = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    stop.wait, stop.best, stop.stopped_epoch = 2, 0.25, None
    stop.best_weights = {"0.weight": np.arange(3.0)}
    checkpoint = ModelCheckpoint("m.npz", monitor="val_accuracy", save_best_only=True)
    checkpoint.best = 0.75
    schedule = LearningRateScheduler(ReduceLROnPlateau(opt, patience=0))
    for value in (1.0, 2.0, 3.0):
        schedule.on_epoch_end(None, 0, {"val_loss": value})
    for callback, fresh in ((stop, EarlyStopping(patience=3, restore_best_weights=True)),
                            (checkpoint, ModelCheckpoint("m.npz", monitor="val_accuracy",
                                                         save_best_only=True)),
                            (schedule, LearningRateScheduler(ReduceLROnPlateau(SGD(lr=0.1),
                                                                                patience=0)))):
        state = callback.state_dict()
        if callback is not stop:
            state = json.loads(json.dumps(state))
        fresh.load_state_dict(state)
        assert _plain(fresh.state_dict()) == _plain(callback.state_dict())
    assert fresh.schedule.optimizer.lr == opt.lr == pytest.approx(0.001)   # the lr it set
    # the initial infinities are kept as None
    assert EarlyStopping().state_dict()["best"] is None
    assert ModelCheckpoint("m.npz").state_dict() == {}          # nothing to keep
    with pytest.raises(ValueError, match="keys"):
        EarlyStopping().load_state_dict({"wait": 1})
    with pytest.raises(ValueError, match="wait"):
        EarlyStopping().load_state_dict({"wait": -1, "best": None, "stopped_epoch": None,
                                         "best_weights": None})
    with pytest.raises(ValueError, match="StepLR"):
        LearningRateScheduler(CosineAnnealingLR(SGD(), T_max=3)).load_state_dict(
            LearningRateScheduler(StepLR(SGD(), 2)).state_dict())


def _plain(obj):
    """``obj`` with arrays as lists, for comparisons."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj.tolist() if isinstance(obj, np.ndarray) else obj


def test_model_file_keeps_callback_states_and_fit_gives_them_back(tmp_path, rng):
    x, y, lengths = sequence_data(rng, n=16)
    model = classifier()
    opt = SGD(lr=0.1)
    stops = [EarlyStopping(monitor="loss", patience=10), EarlyStopping(monitor="loss",
                                                                        patience=20)]
    model.fit(x, y, lengths=lengths, loss="cce", optimizer=opt, epochs=2, verbose=0,
              callbacks=[*stops, LearningRateScheduler(StepLR(opt, 1, gamma=0.5))])
    stops[1].wait = 7                       # tell the two apart
    model.save(tmp_path / "m.npz")          # after fit: the last fit's callbacks
    loaded = fastrnn.load_model(tmp_path / "m.npz")
    assert [e["class"] for e in loaded.callback_states] == ["EarlyStopping", "EarlyStopping",
                                                            "LearningRateScheduler"]
    loaded.save(tmp_path / "again.npz")     # a loaded model passes them on
    assert fastrnn.load_model(tmp_path / "again.npz").callback_states == loaded.callback_states

    fresh = [EarlyStopping(monitor="loss", patience=10), EarlyStopping(monitor="loss",
                                                                        patience=20)]
    restored = []

    class Probe:                            # what the callbacks hold when training begins
        def on_train_begin(self, model, logs):
            restored.extend((f.wait, f.best) for f in fresh)

    with pytest.warns(UserWarning, match=r"not given: LearningRateScheduler \(1\)") as caught:
        loaded.fit(x, y, lengths=lengths, epochs=3, verbose=0, callbacks=[*fresh, Probe()])
    assert caught[0].filename == __file__
    assert restored == [(stops[0].wait, stops[0].best), (7, stops[1].best)]
    assert loaded.callback_states is None   # given once

    again = fastrnn.load_model(tmp_path / "m.npz")
    again.callback_states = None            # start the callbacks fresh
    fresh = EarlyStopping(monitor="loss")
    again.fit(x, y, lengths=lengths, epochs=3, verbose=0, callbacks=[fresh])
    assert fresh.wait == 0


# ------------------------------------------------------------------ resuming, bit for bit

def _callbacks(kind, optimizer, path, steps):
    """The callbacks of a scenario, built fresh (as a user resuming would build them)."""
    checkpoint = ModelCheckpoint(path)
    if kind == "warmup_cosine":
        schedule = SequentialLR(optimizer, [LinearLR(optimizer, start_factor=0.2, total_iters=2),
                                            CosineAnnealingLR(optimizer, T_max=4)],
                                milestones=[2])
        return [checkpoint, LearningRateScheduler(schedule),
                EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)]
    if kind == "per_step":
        schedule = SequentialLR(optimizer, [LinearLR(optimizer, start_factor=0.1,
                                                     total_iters=steps),
                                            CosineAnnealingLR(optimizer, T_max=5 * steps)],
                                milestones=[steps])
        return [LearningRateScheduler(schedule, interval="step"), checkpoint]
    # plateau: the learning rate drops, and early stopping ends training before `epochs`
    return [EarlyStopping(monitor="val_loss", patience=2, min_delta=0.02,
                          restore_best_weights=True),
            LearningRateScheduler(ReduceLROnPlateau(optimizer, patience=0, factor=0.5)),
            checkpoint]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["warmup_cosine", "per_step", "plateau"])
def test_resuming_from_every_epoch_ends_where_uninterrupted_training_ends(tmp_path, rng, dtype,
                                                                          kind):
    """Bucketed, shuffled batches from a Loader, dropout, Adam, validation, a schedule and
    early stopping: training resumed from the checkpoint of any epoch (a fresh process would
    do the same: load_model, then fit with callbacks built afresh) ends with the same
    weights, learning rate and callback states, bit for bit, as training never interrupted."""
    x, y, lengths = sequence_data(rng, n=48)
    seqs = [x[i, :n] for i, n in enumerate(lengths)]
    train = SequenceDataset(seqs[:36], y[:36])
    val = Loader(SequenceDataset(seqs[36:], y[36:]), batch_size=12)
    epochs = 12 if kind == "plateau" else 6

    def fit(model, optimizer, path, callbacks=None):
        loader = Loader(train, batch_size=8, shuffle=True, bucket=2, seed=5)
        callbacks = callbacks or _callbacks(kind, optimizer, path, len(loader))
        model.fit(loader, loss="cce", optimizer=optimizer, epochs=epochs, verbose=0,
                  validation_data=val, callbacks=callbacks)
        return callbacks

    model = classifier(dtype)
    straight = fit(model, Adam(lr=0.05), str(tmp_path / "e{epoch}.npz"))
    trained = model.epochs_trained
    if kind == "plateau":
        assert trained < epochs, "early stopping should end this scenario"
        assert model.optimizer.lr < 0.05
    final = {k: p.copy() for k, p in model.parameters().items()}
    assert all(p.dtype == np.dtype(dtype) for p in final.values())

    for epoch in range(1, trained + 1):
        resumed = fastrnn.load_model(tmp_path / f"e{epoch}.npz")
        assert resumed.epochs_trained == epoch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            callbacks = fit(resumed, resumed.optimizer,
                            str(tmp_path / f"r{epoch}-{{epoch}}.npz"))
        messages = [str(w.message) for w in caught]
        if epoch < trained:
            assert not messages
        else:                               # nothing left to train, and fit says why
            reason = "EarlyStopping stopped training" if kind == "plateau" else "trained no"
            assert len(messages) == 1 and reason in messages[0], messages
            assert caught[0].filename == __file__          # where fit was called
        assert resumed.epochs_trained == trained
        for name, p in resumed.parameters().items():
            np.testing.assert_array_equal(p, final[name], err_msg=f"from epoch {epoch}: {name}")
        assert resumed.optimizer.lr == model.optimizer.lr
        assert [_plain(c.state_dict()) for c in callbacks] == \
            [_plain(c.state_dict()) for c in straight]
