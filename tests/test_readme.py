"""The README's Python examples run as written."""
import importlib.util
import re

from conftest import ROOT

README = ROOT / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)                  # the quick start saves a model file
    namespace = {}
    for block in blocks:                         # later blocks may use earlier names
        if "onnxruntime" in block and not all(importlib.util.find_spec(m) for m in
                                              ("onnx", "onnxruntime")):
            continue                             # the ONNX example needs its optional extras
        if "import keras" in block and not importlib.util.find_spec("keras"):
            continue                             # so do the Keras example
        if "from sklearn" in block and not importlib.util.find_spec("sklearn"):
            continue                             # and the scikit-learn one
        exec(compile(block, str(README), "exec"), namespace)
    assert (tmp_path / "sentiment.npz").exists()
    assert namespace["probabilities"].shape == (5, 1)
