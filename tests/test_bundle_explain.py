"""Explanations from a bundle alone (`Bundle.explain`, `mlopsnb explain`): occlusion on real MNIST bundles agrees with
Captum's `Occlusion` on the torch model, collapses for a re-initialized network, KernelSHAP finds the one column a
target depends on, and the command works where torch cannot be imported. Run with `-s` to see the figures."""
import json, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest

from mlopsnb.bundle import load_bundle
from mlopsnb.cli import command_argv


def rank_correlation(a, b) -> float:
    "Spearman's rho of two maps (ties at their mean rank), 0.0 when either is constant"
    from scipy.stats import spearmanr
    return round(float(np.nan_to_num(spearmanr(np.ravel(a), np.ravel(b))[0])), 12)  # 1.0 exactly for the same map
from _isolation import blocked_imports_prelude

PATCH, STRIDE = 4, 2                 # the bundle's default for 28x28 (a seventh of the side, half of it as stride)
CAPTUM_ATOL = 1e-4                   # max |bundle - Captum| on maps whose values are logit drops of order 0.1..10
RANDOMIZATION_MAX_SPEARMAN = 0.5     # mean rank correlation of trained vs re-initialized maps must stay below this
KEEP = Path(__file__).resolve().parents[1] / '_proc' / 'screenshots'  # pictures for a person to look at (git-ignored)


def _seconds(fn, n: int = 30) -> float:
    "The median wall time of `fn()` over `n` calls after one warm-up call (a shared 2-core machine is noisy)"
    fn(); ts = []
    for _ in range(n): t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _keep(name: str, data: bytes) -> None:
    KEEP.mkdir(parents=True, exist_ok=True); (KEEP / name).write_bytes(data)


@pytest.fixture(scope='module')
def mnist(tmp_path_factory):
    "The MNIST CNN of tests/_trained.py exported as a bundle, the same network re-initialized and exported, and digits"
    import copy, torch
    from mlopsnb.export import export_bundle
    from _trained import mnist_cnn_learner
    d = tmp_path_factory.mktemp('explain_mnist')
    learn, data, val = mnist_cnn_learner(1000, 300, 1)
    trained = export_bundle(learn, d / 'trained', classes=data.classes, dynamo=False, n_parity=2)
    model = copy.deepcopy(learn.model).eval()
    torch.manual_seed(1)
    for m in learn.model.modules():
        if hasattr(m, 'reset_parameters'): m.reset_parameters()
    random = export_bundle(learn, d / 'random', classes=data.classes, dynamo=False, n_parity=2, monitoring=False)
    return {'dir': d, 'trained': trained, 'random': random, 'model': model, 'x': data.x[val[:16]], 'classes': data.classes}


@pytest.fixture(scope='module')
def planted(tmp_path_factory):
    "A table whose target depends on `signal` only, with numeric and categorical noise columns, through fastai and export_bundle"
    import pandas as pd
    from fastai.tabular.all import TabularDataLoaders, Categorify, FillMissing, Normalize, tabular_learner
    import fastai.callback.schedule  # noqa: F401  (Learner.fit_one_cycle)
    import torch
    from mlopsnb.export import export_bundle
    rng = np.random.default_rng(0); torch.manual_seed(0)
    n = 1500
    df = pd.DataFrame({'signal': rng.uniform(0, 1, n), 'noise_a': rng.normal(0, 1, n), 'noise_b': rng.normal(5, 2, n),
                       'noise_cat': rng.choice(['red', 'green', 'blue'], n)})
    df['target'] = np.where(df.signal > 0.5, 'yes', 'no')
    valid = list(range(1200, n))
    dls = TabularDataLoaders.from_df(df, y_names='target', cat_names=['noise_cat'], cont_names=['signal', 'noise_a', 'noise_b'],
                                     procs=[Categorify, FillMissing, Normalize], valid_idx=valid, bs=64)
    learn = tabular_learner(dls, layers=[32], metrics=None)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(4, 1e-2)
    raw = df.iloc[valid].drop(columns='target')
    path = export_bundle(learn, tmp_path_factory.mktemp('planted') / 'planted', example=raw, dynamo=False, n_parity=2)
    return {'path': path, 'rows': raw.iloc[:24], 'accuracy': float((load_bundle(path).predict(raw) == df.target.iloc[valid]).mean())}


def test_occlusion_matches_captum(mnist):
    "The bundle's occlusion (onnxruntime) and Captum's Occlusion (torch) give the same maps on the same digits and settings"
    import torch
    from captum.attr import Occlusion
    b = load_bundle(mnist['trained'])
    x = b.preprocess(mnist['x'])['input']                       # (16, 1, 28, 28): the same preprocessed input for both
    t0 = time.perf_counter()
    ours = b.explain(mnist['x'], patch=PATCH, stride=STRIDE)
    t_ours = (time.perf_counter() - t0) / len(x)
    targets = [e['target_index'] for e in ours]
    t0 = time.perf_counter()
    with torch.no_grad():
        theirs = Occlusion(mnist['model']).attribute(torch.from_numpy(x), sliding_window_shapes=(1, PATCH, PATCH), strides=(1, STRIDE, STRIDE),
                                                     baselines=0.0, target=targets, perturbations_per_eval=64).numpy()[:, 0]
    t_captum = (time.perf_counter() - t0) / len(x)
    diff = np.abs(np.stack([e['attribution_model'] for e in ours]) - theirs)
    scale = np.abs(theirs).max()
    t_one, t_pred = _seconds(lambda: b.explain(mnist['x'][:1], patch=PATCH, stride=STRIDE), 10), _seconds(lambda: b.predict(mnist['x'][:1]))
    print(f"\nocclusion vs Captum on {len(x)} digits (patch {PATCH}, stride {STRIDE}, logits): max |diff| {diff.max():.2e} "
          f"(maps up to {scale:.3g}; relative {diff.max() / scale:.1e}); tolerance {CAPTUM_ATOL:g}\n"
          f"time per explained image: bundle {1e3 * t_ours:.1f} ms ({ours[0]['settings']['windows']} occluded copies), Captum+torch "
          f"{1e3 * t_captum:.1f} ms, one bundle prediction {1e3 * t_pred:.2f} ms: explaining one image (median) {1e3 * t_one:.1f} ms = {t_one / t_pred:.0f}x a prediction")
    assert diff.max() <= CAPTUM_ATOL, diff.max()
    assert [e['prediction'] for e in ours] == b.predict(mnist['x']).tolist()
    assert ours[0]['attribution'].shape == (28, 28) and ours[0]['delta'] is None and ours[0]['settings']['output'] == 'logit'


def test_model_randomization_changes_the_maps(mnist, tmp_path):
    "Adebayo et al.'s sanity check: maps of the trained CNN and of the same network re-initialized rank pixels differently"
    from mlopsnb.attribution_pictures import overlay_grid_png
    trained, random = load_bundle(mnist['trained']), load_bundle(mnist['random'])
    et = trained.explain(mnist['x'])
    er = [random.explain(x[None], target=e['target_index'])[0] for x, e in zip(mnist['x'], et)]  # the same class as the trained map
    rho = np.array([rank_correlation(a['attribution_model'], r['attribution_model']) for a, r in zip(et, er)])
    self_rho = rank_correlation(et[0]['attribution_model'], trained.explain(mnist['x'][:1])[0]['attribution_model'])
    print(f"\nSpearman rank correlation, trained vs re-initialized occlusion maps on {len(rho)} digits: mean {rho.mean():.3f}, "
          f"max {rho.max():.3f} (threshold: mean < {RANDOMIZATION_MAX_SPEARMAN}); trained vs itself {self_rho:.3f}")
    grid = overlay_grid_png([e['image'] for e in et[:8] + er[:8]], [e['attribution'] for e in et[:8] + er[:8]],
                            [f"{e['target']} trained" for e in et[:8]] + [f"{e['target']} random" for e in er[:8]])
    _keep('bundle_explain_randomization.png', grid)
    assert self_rho == 1.0
    assert rho.mean() < RANDOMIZATION_MAX_SPEARMAN, rho


def test_kernel_shap_finds_the_planted_column(planted):
    "The target depends on `signal` only: KernelSHAP over the bundle ranks it first, and the values add up to f(x) - E[f(background)]"
    b = load_bundle(planted['path'])
    rows = planted['rows']
    t0 = time.perf_counter()
    ex = b.explain(rows)
    t_row = (time.perf_counter() - t0) / len(rows)
    one = [rows.iloc[0].to_dict()]
    t_one, t_pred = _seconds(lambda: b.explain(one), 10), _seconds(lambda: b.predict(one))
    cols = list(ex[0]['values'])
    mean_abs = {c: float(np.mean([abs(e['values'][c]) for e in ex])) for c in cols}
    firsts = [max(e['values'], key=lambda c: abs(e['values'][c])) for e in ex]
    gaps = np.array([e['delta'] for e in ex])
    print(f"\nplanted feature: validation accuracy {planted['accuracy']:.3f}; mean |SHAP| of p(target) over {len(ex)} rows: "
          + ', '.join(f"{c} {v:.4f}" for c, v in sorted(mean_abs.items(), key=lambda t: -t[1]))
          + f"\n'signal' ranked first in {firsts.count('signal')}/{len(ex)} rows; additivity gap max {np.abs(gaps).max():.1e}; "
          f"coalitions {ex[0]['settings']['coalitions']} (exact: {ex[0]['settings']['exact']}) x {ex[0]['settings']['background']} background rows\n"
          f"time per explained row {1e3 * t_row:.1f} ms in a batch of {len(rows)}, one row alone (median) {1e3 * t_one:.1f} ms; "
          f"one bundle prediction {1e3 * t_pred:.2f} ms: {t_one / t_pred:.0f}x")
    assert planted['accuracy'] > 0.9
    assert max(mean_abs, key=mean_abs.get) == 'signal'
    assert mean_abs['signal'] > 5 * max(v for c, v in mean_abs.items() if c != 'signal'), mean_abs
    assert firsts.count('signal') >= 0.9 * len(ex), firsts
    assert np.abs(gaps).max() < 1e-5, gaps
    e = ex[0]
    assert abs(sum(e['values'].values()) - (e['value'] - e['base_value'])) < 1e-5
    assert abs(e['value'] - b.predict_proba(rows.iloc[:1])[0, e['target_index']]) < 1e-5  # f(x) is the bundle's own probability


def _explain_without_torch(*args) -> subprocess.CompletedProcess:
    "`mlopsnb explain ARGS` in a process where importing torch or fastai fails"
    script = blocked_imports_prelude() + textwrap.dedent('''
        import sys
        from mlopsnb.cli import main
        rc = main(sys.argv[1:])
        assert not {'torch', 'fastai'} & {m.split('.')[0] for m in sys.modules}, 'torch was imported'
        sys.exit(rc)''')
    return subprocess.run([sys.executable, '-c', script, 'explain', *map(str, args)], capture_output=True, text=True, timeout=120)


def test_cli_without_torch_images(mnist, tmp_path):
    "`mlopsnb explain BUNDLE digit.png --out DIR` writes an overlay with torch not importable; a bad file is exit 2 naming it"
    from PIL import Image
    png = tmp_path / 'digit.png'
    Image.fromarray(mnist['x'][0]).save(png)
    r = _explain_without_torch(mnist['trained'], png, '--out', tmp_path / 'out', '--json')
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)['explanations'][0]
    assert out['files'] == [str(tmp_path / 'out' / 'digit.occlusion.png')] and Image.open(out['files'][0]).size == (224, 224)
    assert out['prediction'] == load_bundle(mnist['trained']).predict([png])[0]
    assert (tmp_path / 'out' / 'explanations.json').exists()
    _keep('bundle_explain_digit.png', Path(out['files'][0]).read_bytes())
    (tmp_path / 'notes.png').write_text('not an image')
    r = _explain_without_torch(mnist['trained'], png, tmp_path / 'notes.png', '--out', tmp_path / 'out2')
    assert r.returncode == 2 and str(tmp_path / 'notes.png') in r.stderr and 'Traceback' not in r.stderr, r.stderr
    r = subprocess.run(command_argv('explain', mnist['trained'], tmp_path / 'missing.png'), capture_output=True, text=True)
    assert r.returncode == 2 and 'missing.png' in r.stderr, r.stderr


def test_cli_without_torch_table(planted, tmp_path):
    "A table bundle: a bar chart per row and the values as CSV and JSON; a row that cannot be explained is named, exit 2"
    from PIL import Image
    rows = planted['rows'].iloc[:3]
    rows.to_csv(tmp_path / 'rows.csv', index=False)
    r = _explain_without_torch(planted['path'], tmp_path / 'rows.csv', '--out', tmp_path / 'out')
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3
    charts = sorted((tmp_path / 'out').glob('rows.row*.kernel_shap.png'))
    assert len(charts) == 3 and Image.open(charts[0]).size[0] > 300
    _keep('bundle_explain_table_row.png', charts[0].read_bytes())
    lines = (tmp_path / 'out' / 'rows.kernel_shap.csv').read_text().splitlines()
    cols = load_bundle(planted['path']).spec['input']['columns']                  # the bundle's order: categorical columns first
    assert lines[0] == 'row,prediction,target,base_value,value,delta,' + ','.join(f'shap_{c}' for c in cols) and len(lines) == 4
    ex = load_bundle(planted['path']).explain(rows.iloc[:1])[0]
    got = dict(zip(lines[0].split(','), lines[1].split(',')))
    assert abs(float(got['shap_signal']) - ex['values']['signal']) < 1e-6  # the CSV holds what Bundle.explain computes
    (tmp_path / 'bad.json').write_text(json.dumps([{**rows.iloc[0].to_dict(), 'noise_a': 'loud'}, {'signal': 0.2}]))
    r = _explain_without_torch(planted['path'], tmp_path / 'bad.json', '--out', tmp_path / 'out3')
    assert r.returncode == 2 and f"{tmp_path / 'bad.json'}: missing columns ['noise_cat', 'noise_a', 'noise_b']" in r.stderr, r.stderr
    (tmp_path / 'bad.json').write_text(json.dumps([{**rows.iloc[0].to_dict(), 'noise_a': 'loud'}, rows.iloc[1].to_dict()]))
    r = _explain_without_torch(planted['path'], tmp_path / 'bad.json', '--out', tmp_path / 'out4')
    assert r.returncode == 2 and f"{tmp_path / 'bad.json'}[0]: not explained: column 'noise_a': 'loud' is not a number" in r.stderr, r.stderr
    assert (tmp_path / 'out4' / 'bad.row1.kernel_shap.png').exists()
