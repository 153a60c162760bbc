"""The example scripts under ``examples/`` (the lecture's sequence mappings, attention on long
inputs, an LSTM against a transformer encoder), each trained on small generated data to a stated
accuracy; and JapaneseVowels, a real data set that sktime ships, against PyTorch."""
import importlib.util
import sys

import pytest

from conftest import ROOT

EXAMPLES = ROOT / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_many_to_one_classifies_variable_length_sequences():
    assert load("many_to_one").run(verbose=0)["accuracy"] >= 0.95


def test_one_to_many_generates_the_learned_text():
    example = load("one_to_many")
    result = example.run(verbose=0)
    text = example.TEXT * 3
    assert result["greedy"] in text             # a verbatim stretch of what it learned
    assert len(result["greedy"]) == len(example.TEXT)
    assert len(result["sampled"]) == len(example.TEXT)   # temperature sampling: valid characters
    assert set(result["sampled"]) <= set(example.TEXT)


def test_many_to_many_tags_every_step():
    assert load("many_to_many_tagging").run(verbose=0)["accuracy"] >= 0.9


def test_many_to_many_unequal_lengths_reverses_strings():
    assert load("seq2seq_reverse").run(verbose=0)["exact_match"] >= 0.9


def test_one_to_one():
    assert load("one_to_one").run(verbose=0)["accuracy"] >= 0.95


def test_attention_reverses_long_strings_and_the_plain_encoder_decoder_does_not():
    """The README's table (about a minute on one core of the AMD EPYC Zen 4 class machine)."""
    result = load("seq2seq_attention").run(verbose=0)
    assert result["attention"]["exact_match"] >= 0.85
    assert result["attention"]["beam_exact_match"] >= 0.85
    assert result["attention"]["token_accuracy"] >= 0.99
    assert result["plain"]["exact_match"] <= 0.05
    assert result["plain"]["token_accuracy"] <= 0.7


def test_lstm_and_transformer_both_learn_which_event_came_first():
    """The README's LSTM-vs-transformer comparison at reduced size (shorter sequences, fewer
    of them; about 10 s on one core): both models well above chance (50%) at both lengths,
    with about as many parameters."""
    result = load("lstm_vs_transformer").run(lengths=(16, 64), n_train=1024, n_test=256,
                                              epochs=10, repeats=1, verbose=0)
    assert set(result) == {16, 64}
    for timesteps, models in result.items():
        assert set(models) == {"lstm", "transformer"}
        for name, r in models.items():
            assert r["accuracy"] >= 0.9, (timesteps, name, r)
            assert r["train_s_per_epoch"] > 0 and r["infer_ms_per_batch"] > 0
        lstm, transformer = models["lstm"]["parameters"], models["transformer"]["parameters"]
        assert abs(lstm - transformer) <= 0.05 * lstm


def test_japanese_vowels_trains_fastrnn_and_torch_from_the_same_weights():
    """The README's JapaneseVowels comparison in a short mode (3 epochs, about 20 s on one
    core): both models, from the same initial weights on the same batches, well above chance
    (1/9) and close to each other."""
    pytest.importorskip("sktime", reason="the example's data set ships with sktime")
    pytest.importorskip("torch", reason="the example compares with PyTorch")
    result = load("japanese_vowels").run(epochs=3, verbose=0)
    assert set(result) == {"fastrnn", "torch"}
    for name, r in result.items():
        assert r["accuracy"] >= 0.85, (name, r)
        assert 0 < r["s_per_epoch"] <= r["train_s"]
    assert abs(result["fastrnn"]["accuracy"] - result["torch"]["accuracy"]) <= 0.03


def test_japanese_vowels_without_its_extras_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sktime", None)        # import sktime raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        load("japanese_vowels").main([])
    assert "needs sktime (the data set) and torch" in str(exit_info.value)
    assert 'pip install sktime "torch==2.13.0"' in str(exit_info.value)
