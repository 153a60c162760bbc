"""fastrnn.sklearn: RNNClassifier and RNNRegressor pass scikit-learn's estimator checks, work in
a Pipeline and a GridSearchCV, and take ragged sequences, 3-D and 2-D arrays. Skipped without
scikit-learn."""
import inspect
import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastrnn.sklearn import EXPECTED_FAILED_CHECKS, RNNClassifier, RNNRegressor  # noqa: E402

#: small and quick, yet enough to pass the checks that ask for a trained model's accuracy
SMALL = dict(hidden_size=8, epochs=10, lr=0.05, random_state=0)
CHECKED = [RNNClassifier(**SMALL, dtype="float64"),          # every check passes
           RNNRegressor(**{**SMALL, "epochs": 30}, dtype="float64"),
           RNNClassifier(**SMALL),                           # float32: see EXPECTED_FAILED_CHECKS
           RNNRegressor(**{**SMALL, "epochs": 30})]


def _checks(estimators):
    if "expected_failed_checks" in inspect.signature(parametrize_with_checks).parameters:
        return parametrize_with_checks(
            estimators, expected_failed_checks=lambda est: {} if est.dtype == "float64"
            else EXPECTED_FAILED_CHECKS)
    return parametrize_with_checks(estimators)              # scikit-learn < 1.6


@pytest.mark.filterwarnings("ignore::UserWarning")
@_checks(CHECKED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def sign_data(rng, n=60, ragged=True):
    """Sequences of 2 features labelled by the sign of the sum of their first feature."""
    lengths = rng.integers(2, 9, n) if ragged else np.full(n, 6)
    X = [rng.standard_normal((int(t), 2)) for t in lengths]
    y = np.array(["up" if s[:, 0].sum() > 0 else "down" for s in X])
    return X, y


def test_ragged_sequences_string_labels_and_learning(rng):
    X, y = sign_data(rng, 200)
    clf = RNNClassifier(cell="gru", hidden_size=16, epochs=15, lr=0.02, random_state=0).fit(X, y)
    assert clf.classes_.tolist() == ["down", "up"]
    assert clf.n_features_in_ == 2 and clf.n_input_features_ == 2
    p = clf.predict_proba(X)
    assert p.shape == (200, 2) and np.allclose(p.sum(axis=1), 1)
    assert clf.score(X, y) > 0.9
    # the ragged list runs on its lengths: as the model on the padded batch with lengths
    from fastrnn.text import pad_sequences
    padded, lengths = pad_sequences(X, dtype="float32")
    np.testing.assert_allclose(p, clf.model_.predict(padded, lengths=lengths), rtol=1e-5,
                               atol=1e-6)
    assert clf.predict(X[:3]).tolist() == clf.classes_[p[:3].argmax(axis=1)].tolist()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "rnn_relu"])
def test_cells_layers_directions_and_3d_input(rng, cell):
    X = rng.standard_normal((30, 5, 3))
    y = rng.integers(0, 3, 30)
    clf = RNNClassifier(cell=cell, hidden_size=4, num_layers=2, bidirectional=True, dropout=0.1,
                        epochs=2, random_state=1).fit(X, y)
    assert clf.predict_proba(X).shape == (30, 3)
    assert clf.model_.layers[0].num_layers == 2 and clf.model_.layers[0].bidirectional
    reg = RNNRegressor(cell=cell, hidden_size=4, epochs=2, optimizer="sgd", lr=0.01,
                       clip_norm=1.0, random_state=1).fit(X, np.c_[X.sum(axis=(1, 2)), y])
    assert reg.predict(X).shape == (30, 2) and reg.n_outputs_ == 2
    with pytest.raises(ValueError, match="X has 2 features per timestep, but RNNClassifier is "
                                         "expecting 3"):
        clf.predict(X[:, :, :2])


def test_2d_input_is_univariate_sequences(rng):
    X = rng.standard_normal((40, 6))
    reg = RNNRegressor(**SMALL).fit(X, X.sum(axis=1))
    assert reg.n_features_in_ == 6 and reg.n_input_features_ == 1
    np.testing.assert_allclose(reg.predict(X), reg.model_.predict(X[:, :, None])[:, 0],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="X has 5 features, but RNNRegressor is expecting 6"):
        reg.predict(X[:, :5])
    reg.predict([X[0, :4], X[1]])           # sequences of other lengths: a list of them


def test_params_clone_pickle_and_errors_named_in_fit(rng):
    clf = RNNClassifier(cell="nope", hidden_size=-3)        # stored as given, checked in fit
    assert clf.get_params()["cell"] == "nope" and clf.get_params()["hidden_size"] == -3
    assert clone(clf).get_params() == clf.get_params()
    X, y = sign_data(rng)
    with pytest.raises(ValueError, match=r"cell must be one of \['gru', 'lstm', 'rnn', "
                                         r"'rnn_relu'\], got 'nope'"):
        clf.fit(X, y)
    with pytest.raises(ValueError, match="hidden_size"):
        clf.set_params(cell="gru").fit(X, y)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        RNNClassifier(optimizer="adamax").fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        RNNClassifier().fit(X, ["a"] * len(X))
    with pytest.raises(ValueError, match="different numbers of features"):
        RNNClassifier().fit([np.zeros((3, 2)), np.zeros((4, 3))], [0, 1])
    fitted = RNNClassifier(**SMALL).fit(X, y)
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    assert not hasattr(clone(fitted), "model_")


def test_pipeline_grid_search_and_cross_validation(rng):
    X = rng.standard_normal((60, 8)) * 5 + 3                  # 2-D: 8 steps of one feature
    y = (X[:, -3:].mean(axis=1) > 3).astype(int)
    pipe = Pipeline([("scale", StandardScaler()), ("rnn", RNNClassifier(**SMALL))])
    search = GridSearchCV(pipe, {"rnn__hidden_size": [4, 8], "rnn__cell": ["gru", "lstm"]},
                          cv=2).fit(X, y)
    assert set(search.best_params_) == {"rnn__hidden_size", "rnn__cell"}
    assert search.predict(X).shape == (60,)
    # 3-D arrays and ragged lists go through scikit-learn's splitters too
    X3, y3 = rng.standard_normal((40, 5, 2)), rng.standard_normal(40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = cross_val_score(RNNRegressor(**SMALL), X3, y3, cv=2)
    assert scores.shape == (2,)
    Xr, yr = sign_data(rng, 40)
    ragged = Pipeline([("id", FunctionTransformer(validate=False)),
                       ("rnn", RNNClassifier(**SMALL))])
    assert GridSearchCV(ragged, {"rnn__epochs": [1, 2]}, cv=2).fit(Xr, yr).best_score_ >= 0
