"""Optimizers, gradient clipping and learning-rate schedules, with PyTorch's exact formulas.

Parameters and gradients are dicts of NumPy arrays with the same keys (e.g.
``"0.weight_ih_l0"``)::

    opt = Adam(lr=1e-3)
    opt.step(params, grads)          # updates the arrays of ``params`` in place

Each optimizer performs, element for element, the update of its ``torch.optim`` namesake with the
same options (PyTorch's single-tensor CPU path), in the parameters' dtype (float32 or float64).
State (moment buffers, step counts) is kept per parameter name and can be saved and restored
with :meth:`Optimizer.state_dict` / :meth:`Optimizer.load_state_dict`, so that training resumed
from a checkpoint continues exactly like uninterrupted training.

The optimizers live in :mod:`fastrnn.optim.optimizers`, clipping in
:mod:`fastrnn.optim.clipping` and the schedules in :mod:`fastrnn.optim.schedulers`; every name is
importable from here.
"""
from .clipping import clip_grad_norm, clip_grad_value
from .optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop, get
from .schedulers import (CosineAnnealingLR, ExponentialLR, LinearLR, LRScheduler,
                         ReduceLROnPlateau, SequentialLR, StepLR)

__all__ = [
    "SGD", "Adagrad", "Adam", "AdamW", "CosineAnnealingLR", "ExponentialLR", "LRScheduler",
    "LinearLR", "Optimizer", "RMSprop", "ReduceLROnPlateau", "SequentialLR", "StepLR",
    "clip_grad_norm", "clip_grad_value", "get",
]
