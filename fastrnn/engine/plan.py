"""The engine's one planner: how a call's rows and units are laid out and split over threads.

Forward, streaming and BPTT all take their layout from here, so that they agree on it by
construction:

* :func:`batch_layout` sorts the batch by length (descending, stable) and deals the sorted rows
  into interleaved batch blocks: the active rows of a timestep are then a prefix of each block,
  and every block gets long and short sequences alike;
* :func:`unit_blocks` splits the hidden units into blocks (multiples of 16 units);
* :func:`fold_biases` folds ``b_ih + b_hh`` into the bias added to the input projection
  (GRU: ``b_hh`` of r and z only; ``b_hn`` stays apart, inside ``r * (...)``);
* :func:`forward_plan`, :func:`step_unit_count` and :func:`bptt_plan` choose how a forward
  call, a streaming step and a layer's BPTT use the threads.

The thresholds are measured (the numbers and the CPU are in each docstring); change them only
with a side-by-side measurement.
"""
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..cell_table import GRU

__all__ = ["BatchLayout", "ForwardPlan", "batch_layout", "unit_blocks", "fold_biases",
           "forward_plan", "in_step_fits", "clamp_work_items", "step_unit_count", "bptt_plan", "MODE_PANEL", "MODE_DOT"]

#: at most this many work items (batch blocks x unit blocks) in one forward call
MAX_WORK_ITEMS = 64
#: unit blocks are multiples of this many units (one cache line of float32)
UNIT_ALIGN = 16

#: below this many multiply-adds per recurrent step, one thread is faster than any split
MIN_PARALLEL_STEP_WORK = 1 << 15
#: below this many multiply-adds the input projection runs on one thread
MIN_PARALLEL_PROJ_WORK = 1 << 22
#: the dot-product kernel on un-packed weights (``MODE_DOT``) is used for hidden sizes from
#: DOT_KERNEL_MIN_H when a call has fewer than H / DOT_KERNEL_H_PER_ROW rows (batch x
#: timesteps): then packing W_hh (a transpose of G*H*H elements) is not amortised by the steps.
#: Measured with the per-target kernels (Zen 5, AVX2 and AVX-512 alike, 2 threads): LSTM
#: B=1 T=10 H=512 and B=2 T=30 H=1024 are 15-40% faster without packing; B=4 T=25 H=512,
#: B=1 T=50 H=256 and B=8 T=10 H=256 are 10-30% faster with it.
DOT_KERNEL_MIN_H = 256
DOT_KERNEL_H_PER_ROW = 8
#: multiply-adds per step from which the streaming step splits hidden units over two threads
STEP_PARALLEL_MIN_WORK = 1 << 18   # measured: LSTM H=256 3x faster on 2 threads, H=128 not
#: fewest batch rows per thread for which BPTT's threads take independent batch blocks
ITEM_MIN_ROWS = 4
#: rows per batch block for which each step projects its own input (x_t @ W_ih^T inside the
#: time loop) instead of one projection GEMM before it: from INPUT_IN_STEP_MIN_ROWS to
#: INPUT_IN_STEP_MAX_ROWS.  Measured on an AVX2 Zen 4, LSTM, interleaved: one core, per work
#: item, 16 rows H=64 -12%, 32 rows H=128 -11%, 8 rows H=128 -6%, 4 rows even; two threads
#: (whole calls) 16 rows a block (F2) -15%, but 32 rows a block +5% (F3), +8% (GRU F6), +9%
#: (P1pad): beside a projection GEMM that both cores run at their peak, the steps' own
#: projections pay once a block has as many rows as fill the kernel's tiles.
INPUT_IN_STEP_MIN_ROWS = 8
INPUT_IN_STEP_MAX_ROWS = 16
#: ... and only while a layer's weights (W_ih and W_hh: (I + H) * G * H elements) stay within
#: this many elements (512 KiB of float32, half a Zen 4 core's L2): each step then reads both
#: matrices from its core's cache.  With larger weights every step streams W_ih too, from L3:
#: measured on the AVX2-only Zen 4, two threads, interleaved, LSTM B=32 T=50 (2 x 16 rows):
#: I=H=512 (F8, 8 MiB) 6% faster with the projection GEMM before the loop, I=H=256 (2 MiB)
#: even, I=H=128 (512 KiB) even.
INPUT_IN_STEP_MAX_WEIGHTS = 1 << 17
#: rows per thread from which a forward splits the batch (not the hidden units) over the
#: threads whatever H: no barrier at each step, and each block reads all of W_hh (measured,
#: two threads, LSTM B=32 T=50: I=H=512 -3%, I=H=256 -4%, I=H=255 -6% against unit blocks)
BATCH_SPLIT_MIN_ROWS = 16
#: batch blocks per thread where each keeps BATCH_SPLIT_MIN_ROWS rows: the threads claim them
#: one at a time, so that a thread held up by the machine (another process, a virtual CPU
#: that the host runs slower for a while) runs fewer.  Measured on a Zen 4 VM, two threads,
#: in-process interleaved, 4 blocks of 16 rows against 2 of 32 (LSTM B=64 T=50 I=H=128 F3, GRU
#: F6, LSTM B=64 T=100 P1pad): AVX2 kernels -2..-3% while the VM ran both CPUs at full speed,
#: -13..-19% while one ran slower, -23% (F3) beside a busy process; AVX-512 kernels even, and
#: +3..5% in one run while one CPU ran slower.  Blocks of 8 rows (B=32) cost the AVX2 kernels'
#: 6-row tiles 4-9% at full speed, so smaller batches keep one block a thread.
BLOCKS_PER_THREAD = 2
#: ... and only while W_hh (G * H * H elements) stays within this many (512 KiB of float32): a
#: block of 16 rows is a GEMM of 4 tiles, too few to hide streaming a larger W_hh from L3
#: (measured on a Xeon, family 6 model 207, in-process interleaved, LSTM T=50, 4 blocks of 16
#: rows against 2 of 32: H=128 -11%, but H=256 +8%, H=512 +2..7%, H=1024 (T=25) +16%)
BLOCKS_PER_THREAD_MAX_WEIGHTS = 1 << 17

#: recurrent GEMM modes
MODE_PANEL, MODE_DOT = 0, 1


@dataclass(frozen=True)
class BatchLayout:
    """The rows of a batch, sorted by length and dealt into blocks.

    Attributes
    ----------
    lengths : ndarray of int64, shape (B,)
        Every sequence's length (T for all when the call had no ``lengths``).
    order : ndarray of int64, shape (B,)
        The caller's rows, sorted by length (descending, stable), block after block.
    blocks : ndarray of int64, shape (nblocks + 1,)
        Bounds of the blocks in ``order``.
    partial : bool
        True when some sequence is shorter than T.
    """

    lengths: np.ndarray
    order: np.ndarray
    blocks: np.ndarray
    partial: bool

    @property
    def num_blocks(self):
        """Number of batch blocks."""
        return len(self.blocks) - 1


def batch_layout(lengths, B, T, nblocks):
    """Sort the batch by length and deal it into ``nblocks`` interleaved blocks.

    Parameters
    ----------
    lengths : ndarray of int64 (B,) or None
        Validated lengths in 1..T, or None (all T).
    B, T : int
        Batch size and timesteps.
    nblocks : int
        Wanted number of blocks (at least 1; at most B are made).

    Returns
    -------
    BatchLayout
    """
    nblocks = max(1, min(nblocks, B))
    if lengths is None:
        return _full_length_layout(B, T, nblocks)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    partial = bool((lengths != T).any())
    return _layout(lengths, B, nblocks, partial)


@lru_cache(maxsize=256)
def _full_length_layout(B, T, nblocks):
    """The layout of a call without ``lengths``: a function of its shape alone, made once per
    shape (its arrays are read-only, as they are shared by the calls)."""
    layout = _layout(np.full(B, T, dtype=np.int64), B, nblocks, False)
    for a in (layout.lengths, layout.order, layout.blocks):
        a.flags.writeable = False
    return layout


def _layout(lengths, B, nblocks, partial):
    """The :class:`BatchLayout` of validated int64 ``lengths`` (no sort when none is short)."""
    srt = np.argsort(-lengths, kind="stable") if partial else np.arange(B, dtype=np.int64)
    if nblocks > 1:
        srt = np.concatenate([srt[i::nblocks] for i in range(nblocks)])
    order = np.ascontiguousarray(srt, dtype=np.int64)
    bounds = [0]
    for i in range(nblocks):
        bounds.append(bounds[-1] + (B - i + nblocks - 1) // nblocks)
    blocks = np.array(bounds, dtype=np.int64)
    return BatchLayout(lengths, order, blocks, partial)


def unit_blocks(H, n):
    """Bounds (int64, ``k + 1`` entries) of about ``n`` blocks of the ``H`` hidden units: every
    block but the last ``ceil(H / n)`` units, rounded up to a multiple of :data:`UNIT_ALIGN`
    when H is at least twice that; one block when ``n`` is 1 or H is 1."""
    return _unit_blocks(H, max(n, 1))


@lru_cache(maxsize=256)
def _unit_blocks(H, n):
    align = UNIT_ALIGN if H >= 2 * UNIT_ALIGN else 1
    if n <= 1 or H < 2 * align:
        bounds = np.array([0, H], dtype=np.int64)
    else:
        step = -(-H // n)
        step = -(-step // align) * align
        bounds = np.array(list(range(0, H, step)) + [H], dtype=np.int64)
    bounds.flags.writeable = False   # shared by the calls of one shape
    return bounds


def fold_biases(weights, suffix, cell, H, dtype):
    """``(bx, bhn)`` of one layer and direction.

    ``bx`` (G*H) is added to the input projection: ``b_ih + b_hh`` (GRU: ``b_hh`` for r and z
    only); ``bhn`` (H) is GRU's ``b_hn``, added inside ``r * (h W_hn^T + b_hn)`` (zeros for
    the other cells).  Absent biases count as zeros.
    """
    G = cell.gates
    b_ih = weights.get("bias_ih" + suffix)
    b_hh = weights.get("bias_hh" + suffix)
    for name, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
        if b is not None and b.shape != (G * H,):   # a guard: the layers validate shapes
            raise ValueError(f"{name}{suffix} must have shape ({G * H},), got {b.shape}")
    bx = np.zeros(G * H, dtype=dtype) if b_ih is None else b_ih.astype(dtype)  # (a copy)
    bhn = np.zeros(H, dtype=dtype)
    if b_hh is not None:
        if cell.code == GRU:
            bx[:2 * H] += b_hh[:2 * H]
            bhn[:] = b_hh[2 * H:]
        else:
            bx += b_hh
    return bx, bhn


@dataclass(frozen=True)
class ForwardPlan:
    """How one forward call runs.

    Attributes
    ----------
    batch_blocks, unit_blocks : int
        Wanted numbers of batch and hidden-unit blocks (work items: their product).
    mode : int
        Recurrent GEMM: :data:`MODE_PANEL` or :data:`MODE_DOT`.
    projection_threads : int
        Threads of the input projection GEMM.
    input_in_step : bool
        Each step projects its own rows' input (no projection GEMM before the time loop).
    """

    batch_blocks: int
    unit_blocks: int
    mode: int
    projection_threads: int
    input_in_step: bool = False


@lru_cache(maxsize=256)
def forward_plan(B, T, I, H, G, D, nthreads):
    """Choose the :class:`ForwardPlan` of a forward call.

    Kernels: ``MODE_PANEL`` (the register-tiled kernel on weights panel-packed once per call;
    best for small and medium H), ``MODE_DOT`` (dot-product kernel on the weights as given: no
    per-call transpose of a large W_hh).  Two ways to use several cores:

    * batch blocks: independent sequences, no synchronisation; each core reads all of W_hh,
      so it suits small H with enough batch rows; :data:`BLOCKS_PER_THREAD` blocks a thread
      (claimed one at a time) where each keeps :data:`BATCH_SPLIT_MIN_ROWS` rows and W_hh is
      small (:data:`BLOCKS_PER_THREAD_MAX_WEIGHTS`), else one;
    * unit blocks: each core owns a slice of the hidden units (and of W_hh, which then stays in
      its own L2) and the threads meet at one barrier per step; for large H with a small
      batch (fewer than :data:`BATCH_SPLIT_MIN_ROWS` rows a thread), or a batch too small to
      split.

    The input projection runs inside the steps (``input_in_step``) for the panel kernel when
    each batch block has :data:`INPUT_IN_STEP_MIN_ROWS` to :data:`INPUT_IN_STEP_MAX_ROWS`
    rows and the weights stay in a core's cache (:data:`INPUT_IN_STEP_MAX_WEIGHTS`): a
    step's GEMM then has rows enough to run at the kernel's speed, and the projection
    (B*T*G*H values) never goes through memory.  With fewer rows, with more (on two
    threads), and with larger weights, one GEMM over all B*T rows before the time loop is
    faster.
    """
    few_rows = B * T * DOT_KERNEL_H_PER_ROW < H
    mode = MODE_DOT if H >= DOT_KERNEL_MIN_H and few_rows else MODE_PANEL
    proj = nthreads if B * T * max(I, H * D) * G * H >= MIN_PARALLEL_PROJ_WORK else 1
    if nthreads <= 1 or B * G * H * H < MIN_PARALLEL_STEP_WORK:
        nb, nu = 1, 1
    elif B >= BATCH_SPLIT_MIN_ROWS * nthreads or (H < 256 and B >= 4 * nthreads):
        nb, nu = nthreads, 1
    else:
        nb, nu = 1, nthreads
    nb, nu = clamp_work_items(nb, nu, B, H)
    # where the input is projected follows the rows of a thread, not of a block
    in_step = in_step_fits(B, nb, mode, max(I, H * D), H, G)
    if (nu == 1 and nb > 1 and B >= BLOCKS_PER_THREAD * BATCH_SPLIT_MIN_ROWS * nb
            and G * H * H <= BLOCKS_PER_THREAD_MAX_WEIGHTS):
        nb = clamp_work_items(BLOCKS_PER_THREAD * nb, 1, B, H)[0]
    return ForwardPlan(nb, nu, mode, proj, in_step)


def in_step_fits(B, nb, mode, I, H, G):
    """Whether a forward of batch B in ``nb`` batch blocks, with layers of at most I inputs,
    H units and G gates, projects the input in each step (see :func:`forward_plan`)."""
    return (mode == MODE_PANEL
            and INPUT_IN_STEP_MIN_ROWS <= -(-B // nb) <= INPUT_IN_STEP_MAX_ROWS
            and (I + H) * G * H <= INPUT_IN_STEP_MAX_WEIGHTS)


def clamp_work_items(nb, nu, B, H):
    """``(nb, nu)`` clamped to at most B batch blocks, H unit blocks and
    :data:`MAX_WORK_ITEMS` work items in all."""
    nb = max(1, min(nb, B, MAX_WORK_ITEMS))
    nu = max(1, min(nu, H, MAX_WORK_ITEMS // nb))
    return nb, nu


def step_unit_count(I, H, G):
    """Unit blocks of a streaming step: two (one per core) once a step is worth a thread
    hand-off (:data:`STEP_PARALLEL_MIN_WORK` multiply-adds and H >= 64), else one."""
    return 2 if G * H * (I + H) >= STEP_PARALLEL_MIN_WORK and H >= 64 else 1


def bptt_plan(D, B, H, nthreads):
    """``(item threads, GEMM threads)`` of one layer's BPTT.

    Two ways to use two cores: the batch split into interleaved blocks (or, bidirectional, the
    two directions) as independent work items, one per thread of the engine's OpenMP team,
    each step's GEMM on its own thread (no synchronisation at all); or, for a batch too small
    to split, the steps one after the other with each step's GEMM split by column panels over
    the team (a fork and a join per step, the gate math on one thread).  Items win at every
    hidden size once they run on the team rather than on a thread of their own (measured,
    float32, 2 cores, medians of a training step, items against split: LSTM B=64 H=128 9.7
    against 10.8 ms, GRU 8.2 against 10.3; LSTM B=16 H=256 21.3 against 22.0; LSTM B=32
    H=512 25.9 against 26.3; B=8 H=512 within 2%).
    """
    if nthreads > 1 and (D > 1 or B >= ITEM_MIN_ROWS * nthreads):
        return min(2, nthreads), 1
    return 1, nthreads
