"""scikit-learn estimators: :class:`RNNClassifier` and :class:`RNNRegressor`.

A recurrent layer (``RNN``, ``LSTM`` or ``GRU``) reads each sequence and a ``Dense`` layer maps
its final output to the classes or the targets; ``fit`` builds a new
:class:`fastrnn.Sequential` and trains it. The estimators follow scikit-learn's conventions
(constructor arguments stored as given and checked in ``fit``, ``get_params`` / ``set_params``,
``clone``, fitted attributes with a trailing underscore), so they work in a ``Pipeline``, a
``GridSearchCV`` and ``cross_val_score``. Needs scikit-learn (``pip install fastrnn[sklearn]``).

``X`` may be:

- a 3-D array ``(n_samples, timesteps, features)``;
- a list of ``n_samples`` arrays ``(T_i, features)`` (or ``(T_i,)`` for one feature) of
  different lengths, run on their lengths (nothing is computed on padding);
- a 2-D array ``(n_samples, timesteps)``: each row one sequence of one feature (a univariate
  time series per row, sktime's convention). Its columns are then the ``n_features_in_``
  scikit-learn checks: ``predict`` wants the same number of columns, as every scikit-learn
  estimator does for tabular data (pass a list or a 3-D array for other lengths).

scikit-learn's ``check_estimator`` checks pass on 2-D data read that way, except those listed
in :data:`EXPECTED_FAILED_CHECKS`, with the reasons given there.
"""
import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import (check_array, check_consistent_length,
                                          check_is_fitted, column_or_1d)
except ImportError:                                             # pragma: no cover
    raise ImportError("fastrnn.sklearn needs scikit-learn: pip install fastrnn[sklearn] (or "
                      "pip install scikit-learn)") from None
try:                                        # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:                                             # pragma: no cover
    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

from .layers import GRU, LSTM, RNN, Dense
from .models import Sequential

__all__ = ["RNNClassifier", "RNNRegressor", "EXPECTED_FAILED_CHECKS"]

#: the recurrent layer of each ``cell``
_CELLS = {"rnn": lambda **kw: RNN(nonlinearity="tanh", **kw),
          "rnn_relu": lambda **kw: RNN(nonlinearity="relu", **kw),
          "lstm": lambda **kw: LSTM(**kw), "gru": lambda **kw: GRU(**kw)}

#: scikit-learn's estimator checks (``check_estimator`` / ``parametrize_with_checks``) that
#: may fail with the default ``dtype="float32"``, and why (pass it as
#: ``expected_failed_checks``); with ``dtype="float64"`` every check passes. Not run at all:
#: the ``sample_weight`` checks (``fit`` takes no ``sample_weight``), the pandas checks without
#: pandas installed, ``check_array_api_input`` without ``SCIPY_ARRAY_API=1``.
EXPECTED_FAILED_CHECKS = {
    "check_methods_sample_order_invariance":
        "float32: an output may differ in its last bit with the other rows of its batch (the "
        "engine's blocking), and the check compares to float64's precision (rtol 1e-7)",
    "check_methods_subset_invariance":
        "float32: an output may differ in its last bit with the other rows of its batch (the "
        "engine's blocking), and the check compares to float64's precision (rtol 1e-7)",
}


def _as_sequences(X, name="X"):
    """``X`` as ``(x, lengths, tabular)``: a float array ``(n, T, F)``, the valid steps of each
    sequence (None when all are ``T``) and whether ``X`` was 2-D (univariate rows)."""
    if isinstance(X, (list, tuple)) and len(X) and all(np.ndim(s) in (1, 2) for s in X) and \
            len({np.shape(s)[0] for s in X}) > 1:
        sequences = []
        for i, s in enumerate(X):
            s = check_array(s, ensure_2d=False, dtype=[np.float64, np.float32],
                            ensure_min_samples=0, input_name=f"{name}[{i}]")
            sequences.append(s[:, None] if s.ndim == 1 else s)
        features = {s.shape[1] for s in sequences}
        if len(features) > 1:
            raise ValueError(f"{name} holds sequences with different numbers of features "
                             f"{sorted(features)}")
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        x = np.zeros((len(sequences), lengths.max(), features.pop()), np.float32)
        for i, s in enumerate(sequences):
            x[i, :len(s)] = s
        return x, lengths, False
    x = check_array(X, allow_nd=True, dtype=[np.float64, np.float32], input_name=name)
    if x.ndim == 2:
        return x[:, :, None], None, True
    if x.ndim != 3:
        raise ValueError(f"{name} must be (n_samples, timesteps, features), "
                         f"(n_samples, timesteps) or a list of (timesteps, features) arrays, "
                         f"got an array of shape {x.shape}")
    return x, None, False


_X_DOC = """X : array_like or list of array_like
            ``(n_samples, timesteps, features)``, ``(n_samples, timesteps)`` (one feature), or
            a list of ``(T_i, features)`` / ``(T_i,)`` arrays of different lengths."""


def _x_doc(method):
    """Put the description of ``X`` into ``method``'s docstring."""
    method.__doc__ = method.__doc__.replace("{X}", _X_DOC)
    return method


class _RNNEstimator(BaseEstimator):
    """What the classifier and the regressor share (see :class:`RNNClassifier`)."""

    def __init__(self, cell="lstm", hidden_size=32, num_layers=1, bidirectional=False,
                 dropout=0.0, epochs=10, batch_size=32, optimizer="adam", lr=1e-3,
                 clip_norm=None, dtype="float32", random_state=None, verbose=0):
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.clip_norm = clip_norm
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ inputs

    def _fit_input(self, X, y):
        """Validated ``(x, lengths, y)`` for ``fit``; sets ``n_features_in_``."""
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             f"y is None")
        x, lengths, tabular = _as_sequences(X)
        if tabular:                     # scikit-learn's checks: n_features_in_, names
            _validate_data(self, X, reset=True)
        else:
            self.n_features_in_ = x.shape[2]
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        self._tabular = tabular
        self.n_input_features_ = x.shape[2]
        return x, lengths

    def _predict_input(self, X):
        """Validated ``(x, lengths)`` for a fitted estimator."""
        check_is_fitted(self)
        x, lengths, tabular = _as_sequences(X)
        if tabular and self._tabular:
            _validate_data(self, X, reset=False)
        if x.shape[2] != self.n_input_features_:
            raise ValueError(f"X has {x.shape[2]} features per timestep, but "
                             f"{type(self).__name__} is expecting {self.n_input_features_} "
                             f"features per timestep as input")
        return x, lengths

    # ------------------------------------------------------------------ the model

    def _build(self, outputs, activation, seed):
        if self.cell not in _CELLS:
            raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {self.cell!r}")
        recurrent = _CELLS[self.cell](
            input_size=self.n_input_features_, hidden_size=self.hidden_size,
            num_layers=self.num_layers, bidirectional=self.bidirectional,
            dropout=self.dropout if self.num_layers > 1 else 0.0, seed=seed,
            return_sequences=False, dtype=self.dtype)
        width = self.hidden_size * (2 if recurrent.bidirectional else 1)
        return Sequential([recurrent, Dense(width, outputs, activation=activation,
                                            dtype=self.dtype, seed=seed + 1)])

    def _train(self, x, lengths, y, outputs, activation, loss):
        seed = int(check_random_state(self.random_state).randint(0, 2 ** 31 - 2))
        self.model_ = self._build(outputs, activation, seed)
        from . import optim
        self.history_ = self.model_.fit(
            x, y, loss=loss, optimizer=optim.get(self.optimizer, lr=self.lr),
            epochs=self.epochs, batch_size=self.batch_size, lengths=lengths,
            clip_norm=self.clip_norm, verbose=self.verbose, seed=seed)
        return self

    def _outputs(self, X):
        x, lengths = self._predict_input(X)
        return self.model_.predict(x, lengths=lengths).astype(np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


_PARAMETERS_DOC = """
    Parameters
    ----------
    cell : {"lstm", "gru", "rnn", "rnn_relu"}
        The recurrent layer: :class:`fastrnn.LSTM`, :class:`fastrnn.GRU` or
        :class:`fastrnn.RNN` (tanh, or ``"rnn_relu"``).
    hidden_size : int
        Units of each recurrent layer (and direction).
    num_layers : int
        Stacked recurrent layers.
    bidirectional : bool
        Read each sequence in both directions.
    dropout : float
        Dropout between stacked recurrent layers (with ``num_layers > 1``).
    epochs : int
        Passes over the training data.
    batch_size : int
        Sequences per gradient step.
    optimizer : {"adam", "adamw", "sgd", "rmsprop", "adagrad"}
        A :mod:`fastrnn.optim` optimizer, by name.
    lr : float
        Its learning rate.
    clip_norm : float, optional
        Clip the gradients by their global norm before each step.
    dtype : {"float32", "float64"}
        The model's floating type. In float32 an output may differ in its last bit with the
        other rows of its batch (the engine's blocking), so ``predict`` on the rows in another
        order or in parts agrees to float32 precision, not to float64's.
    random_state : int, numpy.random.RandomState or None
        Seeds the initial weights and the shuffling (scikit-learn's name for the seed);
        None gives different weights at each ``fit``.
    verbose : {0, 1, 2}
        What ``fit`` prints: nothing, a progress bar, one line per epoch.
"""

class RNNClassifier(ClassifierMixin, _RNNEstimator):
    __doc__ = """A recurrent network classifier of sequences (scikit-learn's API).

    Each sequence is read by the recurrent layer, whose output at the sequence's last valid
    step (both final states when bidirectional) goes through a ``Dense`` layer with a softmax
    over the classes; trained with cross-entropy.
    """ + _PARAMETERS_DOC + """
    Attributes
    ----------
    classes_ : ndarray
        The class labels, sorted (``predict_proba``'s columns).
    n_features_in_ : int
        The features per timestep, or for a 2-D ``X`` its columns (timesteps of one feature).
    feature_names_in_ : ndarray of str
        The column names of a 2-D ``X`` that had them (a DataFrame).
    n_input_features_ : int
        The features per timestep (the recurrent layer's ``input_size``).
    model_ : fastrnn.Sequential
        The trained model.
    history_ : fastrnn.models.History
        Its training history.

    See Also
    --------
    RNNRegressor

    Notes
    -----
    scikit-learn's estimator checks that fail are in
    :data:`fastrnn.sklearn.EXPECTED_FAILED_CHECKS`, with the reasons.

    Examples
    --------
    >>> import numpy as np
    >>> from fastrnn.sklearn import RNNClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = [rng.standard_normal((int(n), 2)) for n in rng.integers(3, 9, 40)]
    >>> y = ["up" if s[:, 0].sum() > 0 else "down" for s in X]
    >>> clf = RNNClassifier(hidden_size=8, epochs=5, random_state=0).fit(X, y)
    >>> clf.classes_.tolist()
    ['down', 'up']
    >>> clf.predict_proba(X[:3]).shape
    (3, 2)
    """

    @_x_doc
    def fit(self, X, y):
        """Train a new model on ``X`` and the class labels ``y``.

        Parameters
        ----------
        {X}
        y : array_like, shape (n_samples,)
            Class labels (numbers or strings).

        Returns
        -------
        self
        """
        x, lengths = self._fit_input(X, y)
        y = column_or_1d(y, warn=True)
        check_consistent_length(x, y)
        check_classification_targets(y)
        self.classes_, ids = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"RNNClassifier needs samples of at least 2 classes, got 1 class "
                             f"{self.classes_.tolist()}")
        return self._train(x, lengths, ids, len(self.classes_), "softmax", "cce")

    @_x_doc
    def predict_proba(self, X):
        """The probability of each class for each sequence.

        Parameters
        ----------
        {X}

        Returns
        -------
        ndarray, shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        p = self._outputs(X)
        return p / p.sum(axis=1, keepdims=True)

    @_x_doc
    def predict(self, X):
        """The most likely class of each sequence.

        Parameters
        ----------
        {X}

        Returns
        -------
        ndarray, shape (n_samples,)
            Labels from ``classes_``.
        """
        ids = self.predict_proba(X).argmax(axis=1)
        return self.classes_[ids]


class RNNRegressor(RegressorMixin, _RNNEstimator):
    __doc__ = """A recurrent network regressor of sequences (scikit-learn's API).

    Each sequence is read by the recurrent layer, whose output at the sequence's last valid
    step (both final states when bidirectional) goes through a linear ``Dense`` layer to the
    targets; trained with the mean squared error. Targets far from unit scale train better
    standardized (``sklearn.compose.TransformedTargetRegressor``).
    """ + _PARAMETERS_DOC + """
    Attributes
    ----------
    n_features_in_ : int
        The features per timestep, or for a 2-D ``X`` its columns (timesteps of one feature).
    feature_names_in_ : ndarray of str
        The column names of a 2-D ``X`` that had them (a DataFrame).
    n_input_features_ : int
        The features per timestep (the recurrent layer's ``input_size``).
    n_outputs_ : int
        Targets per sample.
    model_ : fastrnn.Sequential
        The trained model.
    history_ : fastrnn.models.History
        Its training history.

    See Also
    --------
    RNNClassifier

    Examples
    --------
    >>> import numpy as np
    >>> from fastrnn.sklearn import RNNRegressor
    >>> X = np.random.default_rng(0).standard_normal((50, 6, 1))
    >>> reg = RNNRegressor(cell="gru", hidden_size=8, epochs=5, random_state=0)
    >>> reg.fit(X, X[:, :, 0].sum(axis=1)).predict(X).shape
    (50,)
    """

    @_x_doc
    def fit(self, X, y):
        """Train a new model on ``X`` and the targets ``y``.

        Parameters
        ----------
        {X}
        y : array_like, shape (n_samples,) or (n_samples, n_targets)

        Returns
        -------
        self
        """
        x, lengths = self._fit_input(X, y)
        y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
        check_consistent_length(x, y)
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be (n_samples,) or (n_samples, n_targets), got shape "
                             f"{y.shape}")
        self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        self._y_1d = y.ndim == 1
        return self._train(x, lengths, y.reshape(len(y), self.n_outputs_), self.n_outputs_,
                           None, "mse")

    @_x_doc
    def predict(self, X):
        """The predicted targets of each sequence.

        Parameters
        ----------
        {X}

        Returns
        -------
        ndarray, shape (n_samples,) or (n_samples, n_targets)
        """
        out = self._outputs(X)
        return out[:, 0] if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
