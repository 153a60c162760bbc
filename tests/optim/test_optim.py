"""Optimizers, clipping and schedules: PyTorch parity, hand-worked steps, state round trips."""
import json
import math

import numpy as np
import pytest

from fastrnn import optim
from fastrnn.optim import (
    SGD, Adagrad, Adam, AdamW, CosineAnnealingLR, ExponentialLR, LinearLR, ReduceLROnPlateau,
    RMSprop, SequentialLR, StepLR, clip_grad_norm, clip_grad_value,
)

#: (fastrnn class, torch.optim class name, options); every option of every optimizer.
CONFIGS = [
    (SGD, "SGD", dict(lr=0.1)),
    (SGD, "SGD", dict(lr=0.1, momentum=0.9)),
    (SGD, "SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.5, dampening=0.3, weight_decay=0.1)),
    (SGD, "SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (Adam, "Adam", dict()),
    (Adam, "Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    (Adam, "Adam", dict(lr=0.01, betas=(0.3, 0.9), amsgrad=True)),
    (AdamW, "AdamW", dict()),
    (AdamW, "AdamW", dict(lr=0.01, weight_decay=0.3, amsgrad=True)),
    (RMSprop, "RMSprop", dict()),
    (RMSprop, "RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.8, weight_decay=0.1)),
    (RMSprop, "RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    (Adagrad, "Adagrad", dict()),
    (Adagrad, "Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.1,
                              initial_accumulator_value=0.2)),
]
IDS = [f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}"
       for cls, _, kw in CONFIGS]


def make_params(rng, dtype=np.float64):
    return {"0.weight_ih_l0": rng.normal(size=(8, 3)).astype(dtype),
            "0.bias_ih_l0": rng.normal(size=8).astype(dtype)}


def grad_sequence(rng, params, steps=10, dtype=np.float64):
    return [{k: rng.normal(size=v.shape).astype(dtype) for k, v in params.items()}
            for _ in range(steps)]


def run_torch(torch, cls_name, kwargs, params, grads_seq):
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = getattr(torch.optim, cls_name)(list(tensors.values()), **kwargs)
    for grads in grads_seq:
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        opt.step()
    return {k: t.detach().numpy() for k, t in tensors.items()}


@pytest.mark.parametrize("cls, torch_name, kwargs", CONFIGS, ids=IDS)
def test_matches_torch_for_ten_steps(rng, cls, torch_name, kwargs):
    torch = pytest.importorskip("torch")
    params = make_params(rng)
    grads_seq = grad_sequence(rng, params)
    expected = run_torch(torch, torch_name, kwargs, params, grads_seq)
    opt = cls(**kwargs)
    for grads in grads_seq:
        opt.step(params, grads)
    for name, value in params.items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("cls, torch_name, kwargs", CONFIGS[2::3], ids=IDS[2::3])
def test_float32_matches_torch_float32(rng, cls, torch_name, kwargs):
    torch = pytest.importorskip("torch")
    params = make_params(rng, np.float32)
    grads_seq = grad_sequence(rng, params, dtype=np.float32)
    expected = run_torch(torch, torch_name, kwargs, params, grads_seq)
    opt = cls(**kwargs)
    for grads in grads_seq:
        opt.step(params, grads)
    for name, value in params.items():
        assert value.dtype == np.float32
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls, kwargs, expected", [
    (SGD, dict(lr=0.1), [0.8, 0.6]),
    (SGD, dict(lr=0.1, momentum=0.9), [0.8, 0.8 - 0.1 * (0.9 * 2 + 2)]),
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True),
     [1 - 0.1 * 3.8, 1 - 0.38 - 0.1 * (2 + 0.9 * 3.8)]),
    (SGD, dict(lr=0.1, weight_decay=0.5), [1 - 0.1 * 2.5, None]),
    (Adam, dict(lr=0.1), [1 - 0.1 * 2 / (2 + 1e-8), 1 - 0.2 * 2 / (2 + 1e-8)]),
    (Adam, dict(lr=0.1, weight_decay=0.5), [1 - 0.1 * 2.5 / (2.5 + 1e-8), None]),
    (AdamW, dict(lr=0.1, weight_decay=0.1), [0.99 - 0.1 * 2 / (2 + 1e-8), None]),
    (RMSprop, dict(lr=0.01), [1 - 0.01 * 2 / (0.2 + 1e-8), None]),
    (RMSprop, dict(lr=0.01, momentum=0.5), [1 - 0.01 * 2 / (0.2 + 1e-8), None]),
    (Adagrad, dict(lr=0.1), [1 - 0.1 * 2 / (2 + 1e-10), None]),
    (Adagrad, dict(lr=0.1, lr_decay=1.0),
     [1 - 0.2 / (2 + 1e-10), 1 - 0.2 / (2 + 1e-10) - 0.05 * 2 / (np.sqrt(8) + 1e-10)]),
])
def test_hand_worked_steps(cls, kwargs, expected):
    """One parameter 1.0 with gradient 2.0, one or two steps."""
    params = {"w": np.array([1.0])}
    opt = cls(**kwargs)
    for want in expected:
        opt.step(params, {"w": np.array([2.0])})
        if want is not None:
            assert params["w"][0] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("cls, torch_name, kwargs", CONFIGS, ids=IDS)
def test_state_dict_round_trip_continues_identically(rng, cls, torch_name, kwargs):
    params = make_params(rng)
    grads_seq = grad_sequence(rng, params, steps=6)
    straight = {k: v.copy() for k, v in params.items()}
    opt = cls(**kwargs)
    for grads in grads_seq:
        opt.step(straight, grads)

    running = {k: v.copy() for k, v in params.items()}
    first = cls(**kwargs)
    for grads in grads_seq[:3]:
        first.step(running, grads)
    state = first.state_dict()
    checkpoint = {k: v.copy() for k, v in running.items()}
    first.step(running, grads_seq[3])      # later steps must not leak into the saved state
    # Through JSON (config, steps) and plain arrays, as a checkpoint file holds it.
    saved = json.loads(json.dumps({k: v for k, v in state.items() if k != "buffers"}))
    saved["buffers"] = {k: np.array(v) for k, v in state["buffers"].items()}

    second = cls(lr=0.5)
    second.load_state_dict(saved)
    assert second.get_config() == cls(**kwargs).get_config()
    assert second.iterations == 3
    for grads in grads_seq[3:]:
        second.step(checkpoint, grads)
    for name in params:
        np.testing.assert_array_equal(checkpoint[name], straight[name])


def test_from_state_dict_builds_an_equal_optimizer():
    opt = RMSprop(lr=0.02, momentum=0.5, centered=True)
    params = {"w": np.ones(3)}
    opt.step(params, {"w": np.arange(3.0)})
    copy = RMSprop.from_state_dict(opt.state_dict())
    assert copy.get_config() == opt.get_config() and copy.iterations == 1
    other = {"w": params["w"].copy()}
    opt.step(params, {"w": np.ones(3)})
    copy.step(other, {"w": np.ones(3)})
    np.testing.assert_array_equal(other["w"], params["w"])
    sched = StepLR(opt, step_size=2)
    sched.step()
    again = StepLR.from_state_dict(copy, sched.state_dict())
    assert again.optimizer is copy and again.last_epoch == 1 and again.step_size == 2
    with pytest.raises(ValueError, match="RMSprop"):
        Adam.from_state_dict(opt.state_dict())


def test_load_state_dict_refuses_another_optimizer():
    state = Adam().state_dict()
    with pytest.raises(ValueError, match="Adam"):
        SGD().load_state_dict(state)
    with pytest.raises(ValueError, match="keys"):
        Adam().load_state_dict({"config": state["config"]})
    bad = Adam().state_dict()
    bad["buffers"] = {"velocity.w": np.zeros(2)}
    with pytest.raises(ValueError, match="velocity.w"):
        Adam().load_state_dict(bad)


def test_loaded_buffer_of_wrong_shape_is_refused():
    opt = Adam()
    opt.step({"w": np.ones(3)}, {"w": np.ones(3)})
    other = Adam()
    other.load_state_dict(opt.state_dict())
    params = {"w": np.ones(4)}
    with pytest.raises(ValueError, match="shape"):
        other.step(params, {"w": np.ones(4)})
    assert (params["w"] == 1).all()


def test_none_gradient_skips_the_parameter():
    params = {"a": np.ones(2), "b": np.ones(2)}
    opt = Adam(lr=0.1)
    opt.step(params, {"a": np.ones(2), "b": None})
    assert (params["b"] == 1).all() and (params["a"] < 1).all()
    assert opt.state_dict()["param_steps"] == {"a": 1}


def test_lr_is_settable_and_used():
    params = {"w": np.array([1.0])}
    opt = SGD(lr=0.1)
    opt.lr = 0.5
    opt.step(params, {"w": np.array([1.0])})
    assert params["w"][0] == 0.5
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1
    with pytest.raises(TypeError, match="lr"):
        opt.lr = "fast"


def test_updates_in_place_and_keeps_dtype():
    w = np.ones((2, 2), np.float32)
    params = {"w": w}
    Adam().step(params, {"w": np.ones((2, 2))})      # float64 gradient, cast
    assert params["w"] is w and w.dtype == np.float32 and (w < 1).all()


@pytest.mark.parametrize("call, error, words", [
    (lambda: SGD(lr=-0.1), ValueError, "lr"),
    (lambda: SGD(momentum=-1), ValueError, "momentum"),
    (lambda: SGD(nesterov=True), ValueError, "nesterov"),
    (lambda: SGD(nesterov="yes"), TypeError, "nesterov"),
    (lambda: Adam(betas=(0.9, 1.0)), ValueError, "betas[1]"),
    (lambda: Adam(betas=0.9), TypeError, "betas"),
    (lambda: AdamW(eps=-1e-8), ValueError, "eps"),
    (lambda: RMSprop(alpha=True), TypeError, "alpha"),
    (lambda: Adagrad(lr_decay=-1), ValueError, "lr_decay"),
    (lambda: SGD().step({"w": np.ones(2)}, {"v": np.ones(2)}), ValueError, "missing ['w']"),
    (lambda: SGD().step({"w": np.ones(2)}, {"w": np.ones(3)}), ValueError, "grads['w']"),
    (lambda: SGD().step({"w": [1.0, 2.0]}, {"w": np.ones(2)}), TypeError, "params['w']"),
    (lambda: SGD().step({"w": np.ones(2)}, {"w": np.array(["a", "b"])}), TypeError, "grads"),
    (lambda: SGD().step([np.ones(2)], [np.ones(2)]), TypeError, "params"),
])
def test_bad_arguments_are_refused(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)


def test_get():
    assert isinstance(optim.get("adam"), Adam)
    opt = optim.get("SGD", lr=0.3, momentum=0.9)
    assert isinstance(opt, SGD) and opt.lr == 0.3 and opt.momentum == 0.9
    assert isinstance(optim.get(RMSprop, lr=0.1), RMSprop)
    assert optim.get(opt) is opt
    assert isinstance(optim.get("adamw"), AdamW) and optim.get("adamw").weight_decay == 1e-2
    assert isinstance(optim.get("adagrad"), Adagrad)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        optim.get("lbfgs")
    with pytest.raises(TypeError, match="keyword"):
        optim.get(opt, lr=1.0)
    with pytest.raises(TypeError, match="optimizer"):
        optim.get(3)


# ---------------------------------------------------------------------------- clipping

def test_clip_grad_norm_hand_worked():
    grads = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(grads, 1.0) == 5.0
    np.testing.assert_allclose(grads["a"], [0.6], rtol=1e-6)
    np.testing.assert_allclose(grads["b"], [[0.8]], rtol=1e-6)
    assert grads["a"][0] == 3.0 / (5.0 + 1e-6)


def test_clip_grad_norm_leaves_small_gradients():
    grads = {"a": np.array([0.3, 0.4], np.float32)}
    assert clip_grad_norm(grads, 1.0) == pytest.approx(0.5)
    assert grads["a"].tolist() == [np.float32(0.3), np.float32(0.4)]
    assert grads["a"].dtype == np.float32


def test_clip_grad_norm_inf_norm_and_none():
    grads = {"a": np.array([-3.0, 1.0]), "b": None, "c": np.array([2.0])}
    assert clip_grad_norm(grads, 1.5, norm_type=math.inf) == 3.0
    np.testing.assert_allclose(grads["a"], [-1.5, 0.5], rtol=1e-6)
    assert clip_grad_norm({}, 1.0) == 0.0
    with pytest.raises(ValueError, match="norm"):
        clip_grad_norm({"a": np.array([np.inf])}, 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(grads, -1.0)


def test_clip_grad_norm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    grads = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=5)}
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
               for g in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g)
    expected = torch.nn.utils.clip_grad_norm_(tensors, 0.7, norm_type=3.0).item()
    assert clip_grad_norm(grads, 0.7, norm_type=3.0) == pytest.approx(expected, rel=1e-12)
    for t, g in zip(tensors, grads.values()):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)


def test_clip_grad_value():
    grads = {"a": np.array([-3.0, 0.5, 2.0]), "b": None}
    assert clip_grad_value(grads, 1.0) is None
    assert grads["a"].tolist() == [-1.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="clip_value"):
        clip_grad_value(grads, -1.0)
    with pytest.raises(TypeError, match="grads"):
        clip_grad_value({"a": [1.0]}, 1.0)


# ---------------------------------------------------------------------------- schedules

def lr_sequence(scheduler, metrics):
    """The learning rate after each epoch's step (``metrics`` entries None for fixed ones)."""
    lrs = []
    for metric in metrics:
        scheduler.step() if metric is None else scheduler.step(metric)
        lrs.append(scheduler.optimizer.lr if hasattr(scheduler.optimizer, "iterations")
                   else scheduler.optimizer.param_groups[0]["lr"])
    return lrs


PLATEAU = [5.0, 4.0, 4.0, 3.9999, 4.1, 4.0, 3.0, 3.0, 3.5, 3.2, 3.1, 3.0, 2.0, 2.5]
SCHEDULES = [
    ("StepLR", dict(step_size=3, gamma=0.5), [None] * 14),
    ("ExponentialLR", dict(gamma=0.9), [None] * 14),
    ("ReduceLROnPlateau", dict(patience=1), PLATEAU),
    ("ReduceLROnPlateau", dict(mode="max", factor=0.5, patience=0, cooldown=2, min_lr=0.02),
     PLATEAU),
    ("ReduceLROnPlateau", dict(patience=1, threshold=0.5, threshold_mode="abs"), PLATEAU),
    ("LinearLR", dict(), [None] * 14),
    ("LinearLR", dict(start_factor=0.1, end_factor=0.9, total_iters=4), [None] * 14),
    ("CosineAnnealingLR", dict(T_max=10), [None] * 35),        # past T_max: climbs back
    ("CosineAnnealingLR", dict(T_max=3, eta_min=0.01), [None] * 14),
]


@pytest.mark.parametrize("name, kwargs, metrics", SCHEDULES)
def test_schedules_match_torch(name, kwargs, metrics):
    torch = pytest.importorskip("torch")
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    t_sched = getattr(torch.optim.lr_scheduler, name)(t_opt, **kwargs)
    t_opt.step()             # no gradient: changes nothing, but keeps torch from warning
    sched = getattr(optim, name)(SGD(lr=0.1), **kwargs)
    expected = lr_sequence(t_sched, metrics)
    got = lr_sequence(sched, metrics)
    np.testing.assert_allclose(got, expected, rtol=1e-15)
    assert sched.get_last_lr() == got[-1]


def torch_warmup_cosine(torch, opt, warmup, total, eta_min, factor):
    """PyTorch's LinearLR warm-up then CosineAnnealingLR, combined by SequentialLR."""
    lr_scheduler = torch.optim.lr_scheduler
    return lr_scheduler.SequentialLR(
        opt, [lr_scheduler.LinearLR(opt, start_factor=factor, total_iters=warmup),
              lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=eta_min)],
        milestones=[warmup])


def warmup_cosine(opt, warmup, total, eta_min, factor):
    return SequentialLR(opt, [LinearLR(opt, start_factor=factor, total_iters=warmup),
                              CosineAnnealingLR(opt, T_max=total - warmup, eta_min=eta_min)],
                        milestones=[warmup])


@pytest.mark.parametrize("warmup, total, eta_min, factor", [(3, 12, 0.0, 0.1), (5, 9, 1e-3, 0.25),
                                                            (1, 20, 0.0, 0.5)])
def test_warmup_then_cosine_matches_torch_exactly(warmup, total, eta_min, factor):
    """SequentialLR(LinearLR, CosineAnnealingLR): the learning rate of every epoch, including
    epoch 0 (set when the schedule is built) and the restart at the milestone, equals
    PyTorch's float for float."""
    torch = pytest.importorskip("torch")
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    t_sched = torch_warmup_cosine(torch, t_opt, warmup, total, eta_min, factor)
    t_opt.step()
    opt = SGD(lr=0.1)
    sched = warmup_cosine(opt, warmup, total, eta_min, factor)
    assert opt.lr == t_opt.param_groups[0]["lr"]
    assert lr_sequence(sched, [None] * (total + 4)) == lr_sequence(t_sched, [None] * (total + 4))


@pytest.mark.parametrize("name, kwargs", [("LinearLR", dict(start_factor=0.2)),
                                          ("CosineAnnealingLR", dict(T_max=4)),
                                          ("StepLR", dict(step_size=2)),
                                          ("ExponentialLR", dict(gamma=0.5))])
def test_sequential_restarts_each_schedule_as_torch_does(name, kwargs):
    """A schedule after a milestone restarts from base_lr (PyTorch's closed form at epoch 0),
    whatever its kind; a schedule first in the list starts like a lone one."""
    torch = pytest.importorskip("torch")
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    lr_scheduler = torch.optim.lr_scheduler
    t_sched = lr_scheduler.SequentialLR(
        t_opt, [getattr(lr_scheduler, name)(t_opt, **kwargs),
                lr_scheduler.ExponentialLR(t_opt, gamma=0.9),
                getattr(lr_scheduler, name)(t_opt, **kwargs)], milestones=[3, 6])
    t_opt.step()
    opt = SGD(lr=0.1)
    sched = SequentialLR(opt, [getattr(optim, name)(opt, **kwargs), ExponentialLR(opt, 0.9),
                               getattr(optim, name)(opt, **kwargs)], milestones=[3, 6])
    assert opt.lr == t_opt.param_groups[0]["lr"]
    assert lr_sequence(sched, [None] * 12) == lr_sequence(t_sched, [None] * 12)


def test_warmup_and_cosine_hand_worked():
    opt = SGD(lr=1.0)
    warmup = LinearLR(opt, start_factor=0.25, total_iters=3)
    assert opt.lr == 0.25 and warmup.base_lr == 1.0 and warmup.get_last_lr() == 0.25
    assert lr_sequence(warmup, [None] * 4) == pytest.approx([0.5, 0.75, 1.0, 1.0])
    cosine = CosineAnnealingLR(SGD(lr=1.0), T_max=4, eta_min=0.0)
    assert lr_sequence(cosine, [None] * 8) == pytest.approx(
        [(1 + math.cos(math.pi * t / 4)) / 2 for t in range(1, 9)], abs=1e-15)
    opt = SGD(lr=1.0)
    both = warmup_cosine(opt, warmup=2, total=6, eta_min=0.0, factor=0.5)
    assert opt.lr == 0.5
    assert lr_sequence(both, [None] * 6) == pytest.approx(
        [0.75, 1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2,
         0.0], abs=1e-15)


def test_sequential_state_round_trip_resumes_exactly():
    """A SequentialLR saved mid-way (during the warm-up, at the milestone, in the decay) and
    restored on a fresh optimizer and fresh schedules goes on with the same floats; building
    the fresh ones changed nothing of what was restored."""
    expected = lr_sequence(warmup_cosine(SGD(lr=0.1), 4, 12, 1e-3, 0.1), [None] * 14)
    for stop in (0, 2, 4, 5, 13):
        first_opt = SGD(lr=0.1)
        first = warmup_cosine(first_opt, 4, 12, 1e-3, 0.1)
        lr_sequence(first, [None] * stop)
        saved = json.loads(json.dumps(first.state_dict()))
        opt = SGD(lr=0.1)
        opt.load_state_dict(first_opt.state_dict())
        lr = opt.lr
        resumed = warmup_cosine(opt, 4, 12, 1e-3, 0.1)     # sets opt.lr
        resumed.load_state_dict(saved)                      # ... which is not touched
        assert opt.lr != lr or stop == 0
        opt.lr = resumed.get_last_lr()
        assert lr == opt.lr and resumed.last_epoch == stop
        assert lr_sequence(resumed, [None] * (14 - stop)) == expected[stop:]
        other = SequentialLR.from_state_dict(SGD(lr=0.5), saved)
        assert other.get_config() == first.get_config()
        assert [s.last_epoch for s in other.schedulers] == [s.last_epoch for s in
                                                           first.schedulers]


def test_schedules_hand_worked():
    opt = SGD(lr=1.0)
    sched = StepLR(opt, step_size=2, gamma=0.1)
    assert opt.lr == 1.0
    assert lr_sequence(sched, [None] * 5) == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.01])
    assert lr_sequence(ExponentialLR(SGD(lr=1.0), gamma=0.5), [None] * 3) == [0.5, 0.25, 0.125]
    plateau = ReduceLROnPlateau(SGD(lr=1.0), patience=1, factor=0.5)
    assert lr_sequence(plateau, [1.0, 1.0, 1.0, 0.5, 0.6, 0.7]) == \
        [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


OTHER_ARGS = {"StepLR": dict(step_size=1), "ExponentialLR": dict(gamma=0.99),
              "ReduceLROnPlateau": dict(), "LinearLR": dict(total_iters=2),
              "CosineAnnealingLR": dict(T_max=2)}


@pytest.mark.parametrize("name, kwargs, metrics", SCHEDULES)
def test_schedule_state_round_trip(name, kwargs, metrics):
    expected = lr_sequence(getattr(optim, name)(SGD(lr=0.1), **kwargs), metrics)
    first_opt = SGD(lr=0.1)
    first = getattr(optim, name)(first_opt, **kwargs)
    lr_sequence(first, metrics[:5])
    saved = json.loads(json.dumps(first.state_dict()))
    opt = SGD(lr=0.1)
    resumed = getattr(optim, name)(opt, **OTHER_ARGS[name])   # (LinearLR sets opt.lr) ...
    opt.load_state_dict(first_opt.state_dict())               # ... so load this after
    resumed.load_state_dict(saved)
    assert resumed.last_epoch == 5 and resumed.get_config() == first.get_config()
    assert lr_sequence(resumed, metrics[5:]) == expected[5:]


def test_schedule_errors():
    with pytest.raises(TypeError, match="optimizer"):
        StepLR("sgd", step_size=2)
    with pytest.raises(ValueError, match="step_size"):
        StepLR(SGD(), step_size=0)
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(SGD(), factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        ReduceLROnPlateau(SGD(), mode="up")
    with pytest.raises(TypeError, match="metric"):
        ReduceLROnPlateau(SGD()).step()
    with pytest.raises(TypeError, match="metric"):
        ReduceLROnPlateau(SGD()).step("0.5")
    with pytest.raises(ValueError, match="StepLR"):
        ExponentialLR(SGD(), 0.5).load_state_dict(StepLR(SGD(), 2).state_dict())
    with pytest.raises(ValueError, match="start_factor"):
        LinearLR(SGD(), start_factor=0.0)
    with pytest.raises(ValueError, match="end_factor"):
        LinearLR(SGD(), end_factor=1.5)
    with pytest.raises(ValueError, match="total_iters"):
        LinearLR(SGD(), total_iters=0)
    with pytest.raises(ValueError, match="T_max"):
        CosineAnnealingLR(SGD(), T_max=0)
    with pytest.raises(ValueError, match="eta_min"):
        CosineAnnealingLR(SGD(), T_max=3, eta_min=-1.0)
    opt = SGD()
    with pytest.raises(ValueError, match="milestones must hold one epoch fewer"):
        SequentialLR(opt, [LinearLR(opt), CosineAnnealingLR(opt, 5)], milestones=[])
    with pytest.raises(ValueError, match="milestones must increase"):
        SequentialLR(opt, [LinearLR(opt), StepLR(opt, 2), StepLR(opt, 2)], milestones=[3, 3])
    with pytest.raises(ValueError, match=r"schedulers\[1\].*another optimizer"):
        SequentialLR(opt, [LinearLR(opt), CosineAnnealingLR(SGD(), 5)], milestones=[2])
    with pytest.raises(TypeError, match=r"schedulers\[0\].*ReduceLROnPlateau"):
        SequentialLR(opt, [ReduceLROnPlateau(opt), CosineAnnealingLR(opt, 5)], milestones=[2])
    with pytest.raises(ValueError, match="unknown schedule class 'Foo'"):
        SequentialLR.from_state_dict(opt, {"config": {"name": "SequentialLR", "milestones": [2],
                                                      "schedulers": [{"name": "Foo"}]},
                                           "state": {}})
    with pytest.raises(ValueError, match="keys"):
        LinearLR(opt).load_state_dict({"config": {"name": "LinearLR", "start_factor": 0.5,
                                                  "end_factor": 1.0, "total_iters": 5},
                                       "state": {"last_epoch": 1}})
