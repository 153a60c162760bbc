"""Side-by-side timing of fastrnn against PyTorch and ONNX Runtime, in one process.

Usage, from the root of the checkout (``--help`` for every option)::

    python -m benchmarks.compare                      # full run (~10 minutes)
    python -m benchmarks.compare --quick              # smoke run for CI (well under 2 minutes)
    python -m benchmarks.compare --only F1,S1 --repeat 50 --json out.json
    python -m benchmarks.compare --list               # list the configurations
    python -m benchmarks.compare --isa all            # fastrnn on every instruction set this CPU runs
    python -m benchmarks.compare --sustained          # also time each row in sustained calls
    python -m benchmarks.compare --load 1             # ... and beside 1 busy process

From the root the source tree's fastrnn is imported (build it in place); to time an installed
fastrnn, run from elsewhere with only ``benchmarks/`` on the path:
``cd / && PYTHONPATH=/path/to/checkout/benchmarks python -m compare --quick``.

Every contender runs the same layer with the same weights (generated here, loaded into each
through PyTorch-style ``state_dict`` names).  Before anything is timed, every contender's output
and final state are checked against an oracle (PyTorch when installed, else fastrnn's NumPy
reference); a disagreement beyond ~1e-4 (relative to the output's scale) or a crash makes the
script exit with status 1 after printing the table.  Timings never fail the run.

Timing: for each configuration, every contender is warmed up and calibrated so that one sample
(``number`` back-to-back calls) lasts a few milliseconds; then samples are taken round-robin over
the contenders (the order rotates each round), so that machine noise hits all of them alike.
Each sample follows a pause (``--gap``, 50 ms: the previous contender's spinning threads go
idle) and one untimed call: calls after a pause, as an interactive user makes them.  The table
reports the median time per call.  The slow NumPy reference only takes a few samples, and only
where one call is cheap.

Sustained calls (``--sustained``): after its normal samples, each row is timed again with every
sample after 0.15 s of untimed calls of the same contender (its steady state, as a server or a
training loop sees it); a second table gives those times and ratios.  On the shared virtual
machines of the project a peer's time after a pause and in sustained calls differed up to 3.5x.

Contenders, each only when available:

- ``fastrnn``  fastrnn, ``backend="compiled"``, on the kernels in use (the best this CPU runs, or
               ``FASTRNN_ISA``'s, or the first of ``--isa``)
- ``fastrnn[avx2]`` ...  the same on the other instruction sets named by ``--isa``
- ``ref``      fastrnn, ``backend="reference"`` (the NumPy specification; few samples)
- ``torch``    ``torch.nn.LSTM/GRU/RNN(batch_first=True)`` under ``torch.inference_mode()``
- ``onnx``     the same PyTorch module exported with ``torch.onnx.export(..., dynamo=False)``, run
               by an ONNX Runtime ``InferenceSession`` with ``intra_op_num_threads`` = threads

Under load (``--load N``, implies ``--sustained``): the sustained pass is run again while N
other processes spin on the CPU; a table gives each contender's slowdown factor, loaded time /
sustained time alone, from the same run.

Modules: ``configs`` (the rows and their data, shared with the pytest-benchmark suite),
``contenders`` and ``onnx_contender`` (the runners and the oracle check), ``engine`` (the one
access to fastrnn's engine internals), ``machine`` (CPU facts, the GEMM ceiling), ``timing``
(calibration, the interleaved sampler, the sustained pass alone and under load), ``run`` (one
row), ``report`` (tables, JSON), ``cli`` (arguments, the run).

Exit status: 0 when every contender that ran gave the right numbers, 1 otherwise.
"""
