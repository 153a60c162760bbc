"""The report of a run: the header, one record per row (the JSON's ``rows``), the table, the
slowdowns under load, the notes, the JSON file."""
from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Optional

from .configs import Config
from .contenders import PEERS, fastrnn_name
from .timing import SUSTAINED_WARM_S

COLS = ("fastrnn", "ref", "torch", "onnx")
ODD_NAMES = ("N127", "N128", "N129", "N255", "N256", "N257")


def fmt_time(sec: Optional[float], stream: bool) -> str:
    if sec is None:
        return "n/a"
    if stream:
        return f"{sec * 1e6:.2f}us"
    if sec < 1e-3:
        return f"{sec * 1e3:.4f}ms"
    if sec < 1.0:
        return f"{sec * 1e3:.3f}ms"
    return f"{sec:.3f}s"


def fmt_ratio(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _over(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if (a and b) else None


# ---------------------------------------------------------------------------- header


def print_header(meta: dict, plan, sustained: bool, load: int, train_skipped: Optional[str]) -> None:
    sgemm, isas = meta["sgemm_gflops"], meta["isas"]
    by_isa, engine_gemm = meta["engine_gemm_gflops_by_isa"], meta["engine_gemm_gflops"]
    print(f"# fastrnn comparison  {meta['date']}")
    print(f"# machine: {meta['cpu']} ({meta['cpu_flags']}), {meta['cores']} cores; "
          + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    if meta["engine"]:
        e = meta["engine"]
        print(f"# fastrnn engine: kernels {e['isa']}{' (forced by FASTRNN_ISA)' if e['isa_forced'] else ''}"
              f", compiled: {', '.join(e['compiled_isas'])}; this CPU runs: {', '.join(e['supported_isas'])}"
              f"; register tile {e['register_tile']}; timed here on: {', '.join(isas)}")
    print(f"# sgemm (NumPy float32 {plan.sgemm_n}^3, best of {plan.sgemm_reps}) at start: {sgemm:.1f} GFLOP/s"
          + (f"; fastrnn's own GEMM kernel: " + ", ".join(f"{g:.1f} ({i})" for i, g in by_isa.items() if g)
             + " GFLOP/s" if any(by_isa.values()) else
             (f"; fastrnn's own GEMM kernel: {engine_gemm:.1f} GFLOP/s" if engine_gemm else "")))
    if sustained:
        print(f"# sustained calls: every row is timed again, each sample after {SUSTAINED_WARM_S:g} s "
              "of untimed calls" + (f", alone and beside {load} busy process(es)" if load else ""))
    th = meta["threads"]
    print(f"# threads: torch {th['torch']}, onnxruntime intra_op {th['onnxruntime_intra_op']}, "
          f"fastrnn {th['fastrnn'] if th['fastrnn'] is not None else 'default'}")
    busy = float(meta["loadavg_start"].split()[0]) if meta["loadavg_start"] != "?" else 0.0
    print(f"# load average at start: {meta['loadavg_start']}"
          + (f"  WARNING: above the {os.cpu_count()} cores, another process is busy: timings are noisy"
             if busy > (os.cpu_count() or 1) else ""))
    for k, v in meta["unavailable"].items():
        print(f"# n/a {k}: {v}")
    if train_skipped:
        print(f"# {train_skipped}")
    sys.stdout.flush()


# ---------------------------------------------------------------------------- rows


def row_record(cfg: Config, res: dict, stat: str, isas: list) -> dict:
    """The JSON record of a row from ``run.run_config``'s result."""
    runners, med, sustained, loaded = res["runners"], res["times"], res["sustained"], res["loaded"]
    means = res["means"]
    fr = med.get("fastrnn")
    ratios = {p: _over(med.get(p), fr) for p in PEERS}
    best = _best_peer(med)
    fr_names = [fastrnn_name(isas, i) for i in isas] or ["fastrnn"]
    return {
        "config": cfg.name,
        "desc": cfg.describe(),
        "mode": cfg.mode,
        "flops": cfg.flops(),
        "time_s": med,
        "stat": stat,
        "median_s": {r.name: (statistics.median(r.samples) if r.samples else None) for r in runners},
        "min_s": {r.name: (min(r.samples) if r.samples else None) for r in runners},
        "samples": {r.name: len(r.samples) for r in runners},
        "number": {r.name: r.number for r in runners},
        "ratio_peer_over_fastrnn": ratios,
        "best_peer_over_fastrnn": _over(best, fr),
        "fastrnn_gflops": cfg.flops() / fr / 1e9 if fr else None,
        "best_peer_over": {n: _over(best, med.get(n)) for n in fr_names},
        "gflops": {n: (cfg.flops() / med[n] / 1e9 if med.get(n) else None) for n in fr_names},
        "sustained_s": sustained,
        "best_peer_over_fastrnn_sustained": _over(_best_peer(sustained), sustained.get("fastrnn")),
        "loaded_s": loaded,
        "slowdown": {n: _over(loaded.get(n), sustained.get(n)) for n in loaded},
        "sustained_mean_s": means["sustained"],
        "loaded_mean_s": means["loaded"],
        "slowdown_mean": {n: _over(means["loaded"].get(n), means["sustained"].get(n))
                          for n in means["loaded"]},
        "fastrnn_sgemm_fraction": None,  # filled in at the end, against the best sgemm seen
        "na": res["na"],
        "oracle": res["oracle"],
        "single_sample": res["late"],
        "notes": [r.note for r in runners if r.note],
    }


def _best_peer(times: dict) -> Optional[float]:
    """The faster peer's time among ``times`` (contender -> time), or None."""
    valid = [t for t in (times.get(p) for p in PEERS) if t]
    return min(valid) if valid else None


def _cells(row: dict, cols: tuple, stream: bool) -> list:
    med = row["time_s"]
    cells = []
    for c in cols:
        if c in med and med[c] is not None:
            cells.append(fmt_time(med[c], stream))
        else:
            why = row["na"].get(c, "n/a")
            cells.append("WRONG" if why.startswith("WRONG") else ("CRASH" if why.startswith("CRASH") else "n/a"))
    return cells


def format_row(row: dict, stream: bool, header: bool, isas: tuple = ()) -> str:
    """One line of the table (and the header before the first); with several instruction sets,
    a time and a best-peer ratio per extra set after the usual columns."""
    extra = [fastrnn_name(list(isas), i) for i in isas[1:]]
    cols = COLS[:1] + tuple(extra) + COLS[1:]
    lines = []
    if header:
        h = (f"{'config':6s} {'description':44s} " + " ".join(f"{c:>15s}" if c in extra else f"{c:>11s}" for c in cols)
             + f" {'torch/fr':>8s} {'onnx/fr':>8s} {'best/fr':>8s} {'GFLOP/s':>8s} {'%gemm':>6s}"
             + "".join(f" {'best/' + c[8:-1]:>11s}" for c in extra))
        lines.append(h)
        lines.append("-" * len(h))
    onnx_note = "*" if row["notes"] and row["time_s"].get("onnx") else ""
    r = row["ratio_peer_over_fastrnn"]
    g = row["fastrnn_gflops"]
    frac = row["fastrnn_sgemm_fraction"]
    over = row.get("best_peer_over", {})
    lines.append(
        f"{row['config']:6s} {row['desc'][:44]:44s} "
        + " ".join((f"{cell:>15s}" if c in extra else f"{cell + (onnx_note if c == 'onnx' else ''):>11s}")
                   for c, cell in zip(cols, _cells(row, cols, stream)))
        + f" {fmt_ratio(r.get('torch')):>8s} {fmt_ratio(r.get('onnx')):>8s} {fmt_ratio(row['best_peer_over_fastrnn']):>8s}"
        + f" {('%.1f' % g) if g else '-':>8s} {('%.0f%%' % (100 * frac)) if frac else '-':>6s}"
        + "".join(f" {fmt_ratio(over.get(c)):>11s}" for c in extra)
    )
    return "\n".join(lines)


def _contenders(rows: list, key: str) -> list:
    """The contenders named in the rows' ``key`` dictionaries, in order of appearance."""
    who = []
    for row in rows:
        for k in row.get(key, {}):
            if k not in who:
                who.append(k)
    return who


def format_sustained(rows: list) -> str:
    """The table of sustained calls (``--sustained``): each contender's time and the faster
    peer's ratio, next to that ratio after a pause (the main table's)."""
    who = _contenders(rows, "sustained_s")
    h = (f"# sustained calls: each sample after {SUSTAINED_WARM_S:g} s of untimed calls of the "
         f"same contender\n{'config':6s} " + " ".join(f"{k:>15s}" for k in who)
         + f" {'best/fr':>8s} {'after a pause':>14s}")
    lines = [h, "-" * len(h.splitlines()[-1])]
    for row in rows:
        t = row.get("sustained_s", {})
        if t:
            stream = row["mode"] == "stream"
            lines.append(f"{row['config']:6s} "
                         + " ".join(f"{(fmt_time(t[k], stream) if t.get(k) else 'n/a'):>15s}" for k in who)
                         + f" {fmt_ratio(row['best_peer_over_fastrnn_sustained']):>8s}"
                         + f" {fmt_ratio(row['best_peer_over_fastrnn']):>14s}")
    return "\n".join(lines)


def format_slowdowns(rows: list, n: int) -> str:
    """The table of slowdown factors under load (``--load``): loaded time / time alone, both in
    sustained calls, of the median and of the mean."""
    who = _contenders(rows, "slowdown")
    h = (f"# slowdown beside {n} busy process(es): loaded / unloaded time, both sampled after "
         f"{SUSTAINED_WARM_S:g} s of untimed calls, of the median / of the mean\n{'config':6s} ") + \
        " ".join(f"{k:>15s}" for k in who)
    lines = [h, "-" * len(h.splitlines()[-1])]
    for row in rows:
        s, sm = row.get("slowdown", {}), row.get("slowdown_mean", {})
        if s:
            lines.append(f"{row['config']:6s} " + " ".join(
                f"{fmt_ratio(s.get(k)) + ' / ' + fmt_ratio(sm.get(k)):>15s}" for k in who))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the end


def print_table(rows: list, ceiling: float, isas: list) -> None:
    """Fill in each row's fraction of the GEMM ceiling and print the table."""
    for i, row in enumerate(rows):
        if row["fastrnn_gflops"]:
            row["fastrnn_sgemm_fraction"] = row["fastrnn_gflops"] / ceiling
        print(format_row(row, row["mode"] == "stream", header=(i == 0), isas=isas))


def derived_notes(rows: list) -> list:
    """Notes computed across rows: P1 against its padded twin, GFLOP/s next to powers of two."""
    notes = []
    by = {r["config"]: r for r in rows}
    if "P1" in by and "P1pad" in by:
        for who in COLS:
            a, b = by["P1"]["time_s"].get(who), by["P1pad"]["time_s"].get(who)
            if a and b:
                notes.append(f"P1/P1pad time ratio for {who}: {a / b:.2f} "
                             f"(valid steps are {by['P1']['flops'] / by['P1pad']['flops']:.2f} of padded)")
    odd = [(c, by[c]["fastrnn_gflops"]) for c in ODD_NAMES if c in by and by[c]["fastrnn_gflops"]]
    if odd:
        notes.append("fastrnn GFLOP/s next to powers of two: " + ", ".join(f"{c} {g:.1f}" for c, g in odd))
    return notes


def print_legend(meta: dict, stat: str, sustained: bool, load: int, rows: list) -> None:
    sg = meta["sgemm_gflops_samples"]
    engine_gemm = meta["engine_gemm_gflops"]
    print()
    print(f"# times: {stat} per call (streaming: per step), each sample after a pause and one "
          "untimed call; ratios are peer time / fastrnn time (>1: fastrnn faster); best = the "
          "faster peer")
    if sustained:
        print()
        print(format_sustained(rows))
    if load:
        print()
        print(format_slowdowns(rows, load))
    print(f"# GFLOP/s counts 2*steps*G*H*(I+H) (training: 2*steps*G*H*(2I+3H), no input gradient; "
          f"model rows A*: 3x the matrix products of the forward); %gemm = fraction of {meta['sgemm_gflops_ceiling']:.0f} GFLOP/s, the best "
          f"GEMM rate seen (NumPy sgemm, {len(sg)} measurements: start {meta['sgemm_gflops']:.0f}, median "
          f"{statistics.median(sg):.0f}, end {sg[-1]:.0f}"
          + (f"; fastrnn's own kernel {engine_gemm:.0f}" if engine_gemm else "") + ")")
    print("# torch packed rows: pack_padded_sequence(enforce_sorted=False) + module + pad_packed_sequence")


def print_notes(notes: list, rows: list, meta: dict, skip: set) -> None:
    """The notes, then each n/a reason once with the rows it applies to (those of the header
    and of skipped contenders left out)."""
    for n in dict.fromkeys(notes):
        print(f"# note {n}")
    na_lines = {}
    for r in rows:
        for who, why in r["na"].items():
            if who in skip:
                continue
            na_lines.setdefault((who, why), []).append(r["config"])
    for (who, why), names in na_lines.items():
        if why in meta["unavailable"].values():
            continue  # already printed in the header
        print(f"# n/a {who} on {','.join(names)}: {why}")


def write_json(path: str, meta: dict, rows: list, failures: list, notes: list, elapsed: float) -> None:
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows, "failures": failures, "notes": notes,
                   "elapsed_s": elapsed}, f, indent=2, default=str)
    print(f"# wrote {path}")


def print_failures(failures: list) -> None:
    print("\nFAILURES (wrong numbers or crashes):", file=sys.stderr)
    for f in failures:
        print(f"  {f}", file=sys.stderr)
