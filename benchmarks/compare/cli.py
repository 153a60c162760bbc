"""The command line of the comparison: arguments, the run's setup and its loop over the rows."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time

import numpy as np

from . import __doc__ as DOC
from . import report
from .configs import ALL_CONFIGS, select_configs
from .contenders import fastrnn_backends, fastrnn_can_train, fastrnn_isas, import_peers, set_threads
from .machine import cpu_flags, cpu_model, engine_config, loadavg, measure_engine_gemm, measure_sgemm
from .run import Session, run_config
from .timing import FULL, QUICK, SUSTAINED_WARM_S


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=DOC.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few repetitions, small sgemm: a smoke run for CI")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--only", metavar="NAMES", help="comma-separated config names, e.g. F1,S1,N127")
    ap.add_argument("--repeat", type=int, metavar="N", help="samples per contender (default: adaptive)")
    ap.add_argument("--skip", default="", metavar="NAMES", help="contenders to leave out: fastrnn,ref,torch,onnx")
    ap.add_argument("--threads", type=int, help="threads for every contender (default: each one's default)")
    ap.add_argument("--training", choices=["auto", "on", "off"], default="auto",
                    help="training rows: auto = when fastrnn has a working backward; on = also torch-only")
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="statistic of the samples shown in the table (the JSON has both)")
    ap.add_argument("--gap", type=float, default=None, metavar="SECONDS",
                    help="pause before each sample so the previous contender's spinning threads go idle "
                         "(default 0.05, 0.01 with --quick; 0 disables)")
    ap.add_argument("--isa", metavar="NAMES",
                    help="instruction sets to run fastrnn on: comma-separated (the first is the "
                         "'fastrnn' column), or 'all' that this CPU can run (default: the one in use)")
    ap.add_argument("--sustained", action="store_true",
                    help="also time every row in sustained calls (each sample after "
                         f"{SUSTAINED_WARM_S:g} s of untimed calls of the same contender, as a "
                         "server sees them) and report those ratios")
    ap.add_argument("--load", type=int, default=0, metavar="N",
                    help="also time every row beside N busy processes and report the slowdowns "
                         "(implies --sustained: the slowdowns are of sustained calls)")
    ap.add_argument("--list", action="store_true", help="list the configurations and exit")
    args = ap.parse_args(argv)
    args.sustained = args.sustained or args.load > 0
    if args.gap is None:
        args.gap = 0.01 if args.quick else 0.05
    return args


def _versions(fastrnn, torch, ort) -> dict:
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    if fastrnn is not None:
        versions["fastrnn"] = getattr(fastrnn, "__version__", "?")
    if torch is not None:
        versions["torch"] = torch.__version__
    if ort is not None:
        versions["onnxruntime"] = ort.__version__
    return versions


def _training_rows(args, configs: list, s: Session) -> tuple:
    """(configs, why the training rows were dropped or None): with ``--training auto`` they run
    only when fastrnn can train."""
    if args.training != "auto" or s.can_train:
        return configs, None
    dropped = [c.name for c in configs if c.mode.startswith("train")]
    kept = [c for c in configs if not c.mode.startswith("train")]
    return kept, (f"training rows {','.join(dropped)} skipped: {s.train_reason}" if dropped else None)


def setup(args, tmpdir: str, t_start: float) -> tuple:
    """The session of a run and its ``meta`` (the JSON's), the GEMM ceiling measured first,
    before any other library starts its thread pools."""
    plan = QUICK if args.quick else FULL
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    sgemm = measure_sgemm(plan.sgemm_n, plan.sgemm_reps)
    time.sleep(0.2)
    fastrnn, fr_na = fastrnn_backends()
    isas = fastrnn_isas(fastrnn, args.isa) if fastrnn is not None else []
    by_isa = {i: measure_engine_gemm(fastrnn, plan.sgemm_n, plan.sgemm_reps, i) for i in isas}
    engine_gemm = (by_isa.get(isas[0]) if isas
                   else measure_engine_gemm(fastrnn, plan.sgemm_n, plan.sgemm_reps))
    time.sleep(0.2)
    torch, ort, na_global = import_peers(skip)
    torch_threads, fr_threads = set_threads(fastrnn, torch, args.threads)
    can_train, train_reason = fastrnn_can_train(fastrnn, "compiled" if "compiled" not in fr_na else "reference")
    s = Session(args, plan, skip, fastrnn, fr_na, isas, torch, ort, na_global, can_train,
                train_reason, tmpdir, t_start)
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "sgemm_n": plan.sgemm_n,
        "sgemm_gflops": sgemm,
        "engine_gemm_gflops": engine_gemm,
        "engine_gemm_gflops_by_isa": by_isa,
        "engine": engine_config(fastrnn),
        "isas": isas,
        "load_processes": args.load,
        "sustained": args.sustained,
        "threads": {"requested": args.threads, "torch": torch_threads, "fastrnn": fr_threads,
                    "onnxruntime_intra_op": args.threads or os.cpu_count()},
        "versions": _versions(fastrnn, torch, ort),
        "quick": args.quick,
        "loadavg_start": loadavg(),
        "unavailable": {**{f"fastrnn[{k}]": v for k, v in fr_na.items()}, **na_global},
    }
    return s, meta


def run_rows(s: Session, configs: list, sgemm_samples: list, failures: list, notes: list) -> list:
    """Every row in turn (progress on stderr); returns their records."""
    rows = []
    print(f"# running {len(configs)} configurations; the table follows at the end", file=sys.stderr)
    for cfg in configs:
        t_cfg = time.perf_counter()
        # keep sampling the GEMM ceiling: on a shared machine any one moment may be a noisy one
        sgemm_samples.append(measure_sgemm(s.plan.sgemm_n, 1))
        time.sleep(0.2)  # let OpenBLAS's worker threads stop spinning before anything is timed
        res = run_config(cfg, s, failures)
        notes.extend(f"{cfg.name} {r.name}: {r.note}" for r in res["runners"] if r.note)
        rows.append(report.row_record(cfg, res, s.args.stat, s.isas))
        print(f"#   {cfg.name:6s} {time.perf_counter() - t_cfg:6.1f}s  "
              + "  ".join(f"{k} {report.fmt_time(v, cfg.mode == 'stream')}" for k, v in res["times"].items()),
              file=sys.stderr)
    return rows


def main(argv=None) -> int:
    """Run the comparison; 0 when every contender that ran gave the right numbers, else 1."""
    args = parse_args(argv)
    if args.list:
        for c in ALL_CONFIGS:
            print(f"{c.name:6s} {c.describe()}")
        return 0
    t_start = time.perf_counter()
    failures, notes = [], []
    with tempfile.TemporaryDirectory(prefix="fastrnn-bench-") as tmpdir:
        s, meta = setup(args, tmpdir, t_start)
        configs, train_skipped = _training_rows(args, select_configs(args.only, args.training), s)
        report.print_header(meta, s.plan, args.sustained, args.load, train_skipped)
        sgemm_samples = [meta["sgemm_gflops"]]
        rows = run_rows(s, configs, sgemm_samples, failures, notes)
    # The GEMM ceiling: the best rate seen (start, before each configuration, end).
    sgemm_samples.append(measure_sgemm(s.plan.sgemm_n, s.plan.sgemm_reps))
    engine_gemm = meta["engine_gemm_gflops"]
    meta["sgemm_gflops_end"] = sgemm_samples[-1]
    meta["sgemm_gflops_samples"] = sgemm_samples
    meta["sgemm_gflops_ceiling"] = max(sgemm_samples + ([engine_gemm] if engine_gemm else []))
    report.print_table(rows, meta["sgemm_gflops_ceiling"], s.isas)
    notes.extend(report.derived_notes(rows))
    report.print_legend(meta, args.stat, args.sustained, args.load, rows)
    report.print_notes(notes, rows, meta, s.skip)
    return _finish(s, meta, rows, failures, notes)


def _finish(s: Session, meta: dict, rows: list, failures: list, notes: list) -> int:
    elapsed = time.perf_counter() - s.t_start
    meta["loadavg_end"] = loadavg()
    late_rows = [r["config"] for r in rows if r["single_sample"]]
    if late_rows:
        print(f"# --quick ran past {s.plan.quick_deadline:.0f}s: {','.join(late_rows)} timed by the check call alone")
    print(f"# total time {elapsed:.1f}s; load average at end: {meta['loadavg_end']}")
    if s.args.json:
        report.write_json(s.args.json, meta, rows, failures, notes, elapsed)
    if failures:
        report.print_failures(failures)
        return 1
    return 0
