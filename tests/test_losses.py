"""Losses and metrics: finite differences, stability, masks, target forms, PyTorch parity."""
import numpy as np
import pytest

from fastrnn import losses, metrics
from fastrnn.losses import BinaryCrossentropy, CategoricalCrossentropy, MeanSquaredError


def finite_difference(loss, y_pred, y_true, mask=None, eps=1e-6):
    """Central differences of the loss value with respect to every entry of ``y_pred``."""
    grad = np.zeros_like(y_pred)
    for i in np.ndindex(*y_pred.shape):
        plus, minus = y_pred.copy(), y_pred.copy()
        plus[i] += eps
        minus[i] -= eps
        grad[i] = (loss(plus, y_true, mask)[0] - loss(minus, y_true, mask)[0]) / (2 * eps)
    return grad


def problems(rng):
    """(loss, y_pred, y_true) triples covering every loss and target form, float64."""
    x = rng.normal(size=(3, 4, 5))
    return [
        (BinaryCrossentropy(), x, rng.uniform(size=x.shape)),
        (BinaryCrossentropy(from_logits=False), rng.uniform(0.05, 0.95, x.shape),
         rng.integers(0, 2, x.shape)),
        (CategoricalCrossentropy(), x, rng.integers(0, 5, (3, 4))),
        (CategoricalCrossentropy(), x, rng.dirichlet(np.ones(5), size=(3, 4))),
        (MeanSquaredError(), x, rng.normal(size=x.shape)),
    ]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", range(5))
@pytest.mark.parametrize("masked", [False, True])
def test_gradient_matches_finite_differences(rng, case, reduction, masked):
    loss, y_pred, y_true = problems(rng)[case]
    loss.reduction = reduction
    mask = rng.uniform(size=(3, 4)) < 0.6 if masked else None
    value, grad = loss(y_pred, y_true, mask)
    assert isinstance(value, float)
    assert grad.shape == y_pred.shape and grad.dtype == y_pred.dtype
    np.testing.assert_allclose(grad, finite_difference(loss, y_pred, y_true, mask),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", range(5))
def test_masked_steps_change_nothing(rng, case):
    loss, y_pred, y_true = problems(rng)[case]
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=bool)
    value, grad = loss(y_pred, y_true, mask)
    changed = y_pred.copy()
    changed[~mask] = np.nan
    value2, grad2 = loss(changed, y_true, mask)
    assert value2 == value
    np.testing.assert_array_equal(grad2, grad)
    assert not grad[~mask].any()
    # The mean is over the valid steps only: the same as the loss of the valid rows alone.
    rows = loss(y_pred[mask], y_true[mask])[0]
    assert value == pytest.approx(rows, rel=1e-12)


def test_masked_targets_may_be_padding_values():
    y_pred = np.zeros((2, 3, 4))
    ids = np.array([[1, 2, -1], [3, -1, -1]])
    mask = ids >= 0
    value, grad = CategoricalCrossentropy()(y_pred, ids, mask)
    assert value == pytest.approx(np.log(4))
    assert not grad[~mask].any()


def test_mask_of_ones_and_zeros_equals_boolean_mask(rng):
    loss, y_pred, y_true = problems(rng)[0]
    mask = rng.uniform(size=(3, 4)) < 0.5
    a = loss(y_pred, y_true, mask)
    b = loss(y_pred, y_true, mask.astype(np.float32))
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


def test_all_masked_gives_zero():
    value, grad = MeanSquaredError()(np.ones((2, 3, 1)), np.zeros((2, 3, 1)),
                                     mask=np.zeros((2, 3), bool))
    assert value == 0.0 and not grad.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_is_stable_for_huge_logits(dtype):
    x = np.array([1e4, -1e4, 1e4, -1e4, 0.0], dtype=dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    value, grad = BinaryCrossentropy(reduction="sum")(x, y)
    # Right answers: 0, 0, 1e4, 1e4, log 2; gradients sigmoid(x) - y.
    assert value == pytest.approx(2e4 + np.log(2), rel=1e-6)
    np.testing.assert_allclose(grad, [0, 0, 1, -1, -0.5], atol=1e-7)
    assert grad.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cce_is_stable_for_huge_logits(dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype)
    value, grad = CategoricalCrossentropy(reduction="sum")(x, np.array([0, 0]))
    # First row: certain and right (0); second: class 0 is 2e4 + log 2 below.
    assert value == pytest.approx(2e4 + np.log(2), rel=1e-6)
    np.testing.assert_allclose(grad, [[0, 0, 0], [-1, 0.5, 0.5]], atol=1e-7)
    assert np.isfinite(grad).all() and grad.dtype == dtype


def test_bce_probabilities_are_clamped_like_torch():
    value, grad = BinaryCrossentropy(from_logits=False, reduction="sum")(
        np.array([0.0, 1.0, 1.0]), np.array([1.0, 1.0, 0.0]))
    assert value == pytest.approx(200.0)
    assert np.isfinite(grad).all()


def test_integer_and_one_hot_targets_agree(rng):
    x = rng.normal(size=(4, 6, 3))
    ids = rng.integers(0, 3, (4, 6))
    one_hot = np.eye(3)[ids]
    mask = rng.uniform(size=(4, 6)) < 0.7
    a = CategoricalCrossentropy()(x, ids, mask)
    b = CategoricalCrossentropy()(x, one_hot, mask)
    c = CategoricalCrossentropy()(x, ids.astype(np.float32), mask)
    assert a[0] == pytest.approx(b[0], rel=1e-14) and a[0] == c[0]
    np.testing.assert_allclose(a[1], b[1], atol=1e-15)


def test_ignore_index_equals_mask(rng):
    x = rng.normal(size=(3, 5, 4))
    ids = rng.integers(0, 4, (3, 5))
    ids[0, 3:] = -100
    ids[2, 1:] = -100
    a = CategoricalCrossentropy(ignore_index=-100)(x, ids)
    b = CategoricalCrossentropy()(x, np.where(ids < 0, 0, ids), ids >= 0)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


def test_hand_worked_values():
    bce, g = BinaryCrossentropy()(np.array([[0.0], [2.0]]), np.array([1.0, 0.0]))
    assert bce == pytest.approx((np.log(2) + 2 + np.log1p(np.exp(-2))) / 2)
    np.testing.assert_allclose(g, [[-0.25], [0.5 / (1 + np.exp(-2))]])
    cce, g = CategoricalCrossentropy()(np.array([[0.0, np.log(3.0)]]), np.array([1]))
    assert cce == pytest.approx(np.log(4 / 3))
    np.testing.assert_allclose(g, [[0.25, -0.25]])
    mse, g = MeanSquaredError(reduction="sum")(np.array([1.0, 3.0]), np.array([0.0, 1.0]))
    assert mse == 5.0
    np.testing.assert_array_equal(g, [2.0, 4.0])


@pytest.mark.parametrize("loss", [BinaryCrossentropy(), CategoricalCrossentropy(),
                                  MeanSquaredError()])
def test_float32_in_float32_out(rng, loss):
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    y = rng.uniform(size=(2, 3, 4)) if not isinstance(loss, CategoricalCrossentropy) \
        else rng.integers(0, 4, (2, 3))
    value, grad = loss(x, y)
    assert grad.dtype == np.float32 and isinstance(value, float)
    value64, grad64 = loss(x.astype(np.float64), y)
    assert value == pytest.approx(value64, rel=1e-5)
    np.testing.assert_allclose(grad, grad64, rtol=1e-4, atol=1e-7)


def test_labels_without_trailing_axis():
    x = np.array([[0.3], [-1.0]])
    a = BinaryCrossentropy()(x, np.array([1, 0]))
    b = BinaryCrossentropy()(x, np.array([[1], [0]]))
    assert a[0] == b[0]


@pytest.mark.parametrize("call, error, words", [
    (lambda: BinaryCrossentropy()(np.zeros((2, 3)), np.zeros((3, 2))), ValueError, "y_true"),
    (lambda: BinaryCrossentropy()(np.zeros(2), np.array([0.0, 2.0])), ValueError, "[0, 1]"),
    (lambda: BinaryCrossentropy()(np.zeros(2), np.array([0.0, np.nan])), ValueError, "NaN"),
    (lambda: BinaryCrossentropy()(np.array(["a"]), np.zeros(1)), TypeError, "y_pred"),
    (lambda: BinaryCrossentropy(from_logits=False)(np.array([1.5]), np.ones(1)), ValueError,
     "probabilities"),
    (lambda: BinaryCrossentropy()(np.zeros(0), np.zeros(0)), ValueError, "empty"),
    (lambda: BinaryCrossentropy(from_logits=1), TypeError, "from_logits"),
    (lambda: MeanSquaredError(reduction="max"), ValueError, "reduction"),
    (lambda: MeanSquaredError()(np.zeros((2, 3)), np.zeros((2, 3)), np.ones(3)), ValueError,
     "mask"),
    (lambda: MeanSquaredError()(np.zeros((2, 3)), np.zeros((2, 3)), np.full(2, 0.5)),
     ValueError, "mask"),
    (lambda: CategoricalCrossentropy()(np.zeros((2, 3)), np.array([0, 3])), ValueError,
     "0..2"),
    (lambda: CategoricalCrossentropy()(np.zeros((2, 3)), np.array([0.5, 1])), TypeError,
     "integer"),
    (lambda: CategoricalCrossentropy()(np.zeros(3), np.array(1)), ValueError, "class axis"),
    (lambda: CategoricalCrossentropy()(np.zeros((2, 3)), np.zeros(3)), ValueError, "y_true"),
    (lambda: CategoricalCrossentropy(ignore_index=0)(np.zeros((2, 3)), np.eye(3)[:2]),
     ValueError, "ignore_index"),
    (lambda: CategoricalCrossentropy(ignore_index=1.5), TypeError, "ignore_index"),
])
def test_bad_input_is_refused_with_the_argument_named(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)


def test_get_resolves_names_and_objects():
    assert isinstance(losses.get("bce"), BinaryCrossentropy)
    assert losses.get("BCE").from_logits
    assert isinstance(losses.get("binary_crossentropy"), BinaryCrossentropy)
    for name in ("cce", "categorical_crossentropy", "sparse_categorical_crossentropy"):
        assert isinstance(losses.get(name), CategoricalCrossentropy)
    assert isinstance(losses.get("mse"), MeanSquaredError)
    assert isinstance(losses.get(MeanSquaredError), MeanSquaredError)
    obj = CategoricalCrossentropy(ignore_index=0)
    assert losses.get(obj) is obj
    with pytest.raises(ValueError, match="loss must be one of"):
        losses.get("hinge")
    with pytest.raises(TypeError, match="loss"):
        losses.get(3)


# ---------------------------------------------------------------------------- PyTorch parity

def test_values_and_gradients_match_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.normal(size=(3, 4, 5)) * 3
    ids = rng.integers(0, 5, (3, 4))
    probs = rng.dirichlet(np.ones(5), size=(3, 4))
    targets = rng.uniform(size=x.shape)
    for reduction in ("mean", "sum"):
        checks = [
            (BinaryCrossentropy(reduction=reduction), targets,
             lambda t: F.binary_cross_entropy_with_logits(t, torch.tensor(targets),
                                                           reduction=reduction)),
            (MeanSquaredError(reduction=reduction), targets,
             lambda t: F.mse_loss(t, torch.tensor(targets), reduction=reduction)),
            (CategoricalCrossentropy(reduction=reduction), ids,
             lambda t: F.cross_entropy(t.reshape(-1, 5), torch.tensor(ids).reshape(-1),
                                       reduction=reduction)),
            (CategoricalCrossentropy(reduction=reduction), probs,
             lambda t: F.cross_entropy(t.reshape(-1, 5), torch.tensor(probs).reshape(-1, 5),
                                       reduction=reduction)),
        ]
        for loss, y_true, torch_loss in checks:
            t = torch.tensor(x, requires_grad=True)
            expected = torch_loss(t)
            expected.backward()
            value, grad = loss(x, y_true)
            assert value == pytest.approx(expected.item(), rel=1e-12)
            np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_ignore_index_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(6, 4))
    ids = np.array([0, 3, -100, 1, -100, 2])
    t = torch.tensor(x, requires_grad=True)
    expected = torch.nn.CrossEntropyLoss(ignore_index=-100)(t, torch.tensor(ids))
    expected.backward()
    value, grad = CategoricalCrossentropy(ignore_index=-100)(x, ids)
    assert value == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_bce_probabilities_match_torch(rng):
    torch = pytest.importorskip("torch")
    p = rng.uniform(0.01, 0.99, size=(4, 3))
    y = rng.uniform(size=(4, 3))
    t = torch.tensor(p, requires_grad=True)
    expected = torch.nn.BCELoss()(t, torch.tensor(y))
    expected.backward()
    value, grad = BinaryCrossentropy(from_logits=False)(p, y)
    assert value == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-10)


# ---------------------------------------------------------------------------- metrics

def test_accuracy_binary_and_multiclass():
    assert metrics.accuracy(np.array([[2.0], [-1.0], [0.5], [-0.1]]), [1, 0, 0, 0]) == 0.75
    assert metrics.accuracy(np.array([2.0, -1.0]), np.array([1.0, 1.0])) == 0.5
    logits = np.array([[[0.1, 2.0, 0.0], [3.0, 0.0, 0.0]], [[0.0, 0.0, 1.0], [1.0, 2.0, 0.0]]])
    ids = np.array([[1, 2], [2, 0]])
    assert metrics.accuracy(logits, ids) == 0.5
    assert metrics.accuracy(logits, np.eye(3)[ids]) == 0.5
    mask = np.array([[True, False], [True, False]])
    assert metrics.accuracy(logits, ids, mask) == 1.0
    assert metrics.categorical_accuracy(logits, ids, mask=[True, False]) == 0.5
    assert metrics.binary_accuracy(np.array([[1.0, -1.0]]), np.array([[1, 1]])) == 0.5


def test_accuracy_ignores_masked_steps():
    logits = np.array([[[1.0], [-1.0], [5.0]]])
    assert metrics.accuracy(logits, np.array([[1, 1, 0]]), np.array([[1, 0, 0]])) == 1.0
    assert metrics.accuracy(logits, np.array([[1, 1, 0]]), np.zeros((1, 3))) == 0.0


def test_mse_mae_with_mask():
    y_pred = np.array([[1.0, 2.0], [3.0, 100.0]])
    y_true = np.zeros((2, 2))
    mask = np.array([[True, True], [True, False]])
    assert metrics.mse(y_pred, y_true, mask) == pytest.approx(14 / 3)
    assert metrics.mae(y_pred, y_true, mask) == pytest.approx(2.0)
    assert metrics.mse(y_pred[:, :1], y_true[:, 0]) == 5.0


def test_metric_get_and_errors():
    assert metrics.get("accuracy") is metrics.accuracy
    assert metrics.get("ACC") is metrics.accuracy
    assert metrics.get("mse") is metrics.mse
    assert metrics.get("mean_absolute_error") is metrics.mae
    assert metrics.get(len) is len
    with pytest.raises(ValueError, match="metric must be one of"):
        metrics.get("f1")
    with pytest.raises(TypeError, match="metric"):
        metrics.get(1)
    with pytest.raises(ValueError, match="y_true"):
        metrics.accuracy(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="mask"):
        metrics.mae(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((3, 2)))
