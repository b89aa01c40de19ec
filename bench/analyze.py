"""Speed of `mlopsnb.analysis.analyze` on a synthetic 1,000,000 × 20 mixed table, against pandas'
`df.describe(include='all')` + `df.isna().sum()` in the same process (alternating A/B, warm-up, medians).

Goal (issue 6): analyze ≤ 3× the pandas baseline, with plots drawn lazily (only when shown or saved).
The plot rendering time is measured separately and is not part of the ratio.

    python bench/analyze.py [--rows N] [--reps R]
"""
from __future__ import annotations
import argparse, json, os, platform, statistics, sys, time
from pathlib import Path

import numpy as np
import pandas as pd

from mlopsnb.analysis import analyze
from mlopsnb.core import atomic_write


def synthetic_frame(n:int=1_000_000, seed:int=0) -> pd.DataFrame:
    "20 mixed columns: 8 float (3 with 5% NaN), 4 int, 3 category, 3 string, 1 bool, 1 datetime"
    r = np.random.default_rng(seed)
    d = {}
    for i in range(8):
        x = r.normal(i, 1 + i, n)
        if i % 3 == 0: x[r.random(n) < 0.05] = np.nan
        d[f'f{i}'] = x
    for i in range(4): d[f'i{i}'] = r.integers(0, 10 ** (i + 1), n)
    for i in range(3): d[f'c{i}'] = pd.Categorical.from_codes(r.integers(0, 5 * (i + 1), n), [f'cat{j}' for j in range(5 * (i + 1))])
    for i in range(3): d[f's{i}'] = pd.Series(np.array([f'word{j}' for j in range(100 * (i + 1))], dtype=object)[r.integers(0, 100 * (i + 1), n)])
    d['b'] = r.random(n) < 0.3
    d['t'] = pd.Timestamp('2024-01-01') + pd.to_timedelta(r.integers(0, 86400 * 365, n), unit='s')
    return pd.DataFrame(d)


def baseline(df): df.describe(include='all'); df.isna().sum()
def ours(df): return analyze(df, target='c0')


def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--rows', type=int, default=1_000_000); ap.add_argument('--reps', type=int, default=5)
    a = ap.parse_args()
    df = synthetic_frame(a.rows)
    print(f'frame: {df.shape[0]:,} rows × {df.shape[1]} columns; dtypes: {dict(df.dtypes.astype(str).value_counts())}')
    baseline(df); ours(df)  # warm-up: imports, caches
    tb, ta = [], []
    for _ in range(a.reps):  # alternate A/B
        t = time.perf_counter(); baseline(df); tb.append(time.perf_counter() - t)
        t = time.perf_counter(); rep = ours(df); ta.append(time.perf_counter() - t)
    t = time.perf_counter(); pngs = [rep.png(n) for n in rep.plot_names]; t_plots = time.perf_counter() - t
    mb, ma = statistics.median(tb), statistics.median(ta)
    rows = [('describe(include=all) + isna().sum()', mb, 1.0), ('analyze(df, target=...) (plots lazy)', ma, ma / mb),
            (f'  + drawing all {len(pngs)} plots once (not in ratio)', t_plots, float('nan'))]
    print(f"\n{'what':<48}{'median s':>10}{'ratio':>8}")
    for name, s, r in rows: print(f'{name:<48}{s:>10.3f}{r:>8.2f}' if r == r else f'{name:<48}{s:>10.3f}{"":>8}')
    print(f'\nanalyze / pandas baseline = {ma / mb:.2f}x  (goal ≤ 3x) — {"PASS" if ma / mb <= 3 else "FAIL"}')
    res = {'rows': a.rows, 'columns': df.shape[1], 'reps': a.reps, 'baseline_s': tb, 'analyze_s': ta, 'baseline_median_s': mb, 'analyze_median_s': ma,
           'ratio': ma / mb, 'goal': 3.0, 'plots_s': t_plots, 'n_plots': len(pngs), 'sampled_rows': rep.stats['sampled_rows'],
           'python': sys.version.split()[0], 'pandas': pd.__version__, 'numpy': np.__version__, 'machine': platform.machine(), 'cpus': os.cpu_count()}
    out = Path(__file__).parent / 'results' / 'analyze.json'
    atomic_write(out, json.dumps(res, indent=1)); print(f'wrote {out}')


if __name__ == '__main__': main()
