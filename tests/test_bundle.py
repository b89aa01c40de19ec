"""Integration tests for model bundles: prediction where torch/fastai cannot be imported, `predict --verify` on a
corrupted bundle, and MLflow's `models:/name@alias` serving the same predictions as `load_bundle`."""
import argparse, contextlib, io, json, os, shutil, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest

from mlopsnb.bundle import load_bundle, predict_command

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolation import blocked_imports_prelude  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _cli(bundle, *inputs, json_=False, verify=False):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = predict_command(argparse.Namespace(bundle=str(bundle), inputs=[str(i) for i in inputs], json=json_, verify=verify))
    return rc, out.getvalue(), err.getvalue()


def _run_blocked(code: str, cwd: Path) -> subprocess.CompletedProcess:
    "Run `code` in a fresh interpreter where importing torch or fastai raises ImportError"
    script = blocked_imports_prelude(('torch', 'fastai')) + textwrap.dedent(code)
    return subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, 'PYTHONPATH': str(ROOT)})


def test_bundles_match_torch(bundles):
    b = load_bundle(bundles['img'])
    np.testing.assert_array_equal(b.predict(bundles['x_val']), bundles['img_pred'])
    tb = load_bundle(bundles['tab'])
    np.testing.assert_allclose(tb.predict_proba(bundles['raw']), bundles['tab_proba'], atol=1e-4)
    for p in (bundles['img'], bundles['tab']):
        spec = json.loads((p / 'bundle.json').read_text())
        assert spec['parity']['max_abs_diff'] <= 1e-4, spec['parity']
        assert spec['model']['exporter'] in ('dynamo', 'legacy')


def test_bundle_json_is_strict_json_with_non_finite_values(bundles, tmp_path):
    "Non-finite metrics and reference statistics become null: bundle.json parses with a reader that rejects NaN/Infinity"
    from mlopsnb.export import export_bundle
    def reject(constant): raise ValueError(f"not strict JSON: {constant}")
    p = export_bundle(bundles['tlearn'], tmp_path / 'nonfinite', example=bundles['raw'].head(8), dynamo=False,
                      metrics={'valid_loss': float('nan'), 'accuracy': 0.5},
                      reference_stats={'body_mass_g': {'mean': float('inf'), 'std': -float('inf'), 'n': 10}})
    spec = json.loads((p / 'bundle.json').read_text(), parse_constant=reject)
    assert spec['metrics'] == {'valid_loss': None, 'accuracy': 0.5}
    assert spec['reference_stats'] == {'body_mass_g': {'mean': None, 'std': None, 'n': 10}}
    with pytest.raises(ValueError, match='not strict JSON'): json.loads('{"x": Infinity}', parse_constant=reject)
    assert load_bundle(p).verify()['ok']


def test_predict_without_torch_or_fastai(bundles, tmp_path):
    "Images (npy and PNG files) and table rows (CSV and DataFrame) predict in a process that cannot import torch/fastai"
    from PIL import Image
    np.save(tmp_path / 'x.npy', bundles['x_val'])
    for i in range(3): Image.fromarray(bundles['x_val'][i]).save(tmp_path / f'{i}.png')
    bundles['raw'].to_csv(tmp_path / 'rows.csv', index=False)
    r = _run_blocked(f'''
        import json, sys, numpy as np
        for mod in ('torch', 'fastai'):
            try: __import__(mod); sys.exit(mod + ' was importable')
            except ImportError: pass
        from mlopsnb.bundle import load_bundle
        b = load_bundle({str(bundles['img'])!r})
        t = load_bundle({str(bundles['tab'])!r})
        import pandas as pd
        out = {{'npy': b.predict(np.load('x.npy')).tolist(), 'png': b.predict(['0.png', '1.png', '2.png']).tolist(),
               'int8': load_bundle({str(bundles['img'])!r}, 'int8').predict(np.load('x.npy')).tolist(),
               'tab': t.predict_proba(pd.read_csv('rows.csv')).tolist(), 'verify': [b.verify()['ok'], t.verify()['ok']],
               'loaded': sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'fastai'))}}
        print(json.dumps(out))
    ''', tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert out['loaded'] == []
    assert out['npy'] == bundles['img_pred'].tolist()
    assert out['png'] == bundles['img_pred'][:3].tolist()
    assert np.mean(np.array(out['int8']) == bundles['img_pred']) >= 0.9
    np.testing.assert_allclose(np.array(out['tab']), bundles['tab_proba'], atol=1e-4)  # CSV round trip, NaNs included
    assert out['verify'] == [True, True]


def test_cli_predict_and_verify(bundles, tmp_path):
    np.save(tmp_path / 'x.npy', bundles['x_val'][:5])
    rc, out, err = _cli(bundles['img'], tmp_path / 'x.npy', json_=True, verify=True)
    assert rc == 0, err
    r = json.loads(out)
    assert r['verify']['ok'] and [p['prediction'] for p in r['predictions']] == bundles['img_pred'][:5].tolist()
    bundles['raw'].head(8).to_csv(tmp_path / 'rows.csv', index=False)
    rc, out, err = _cli(bundles['tab'], tmp_path / 'rows.csv')
    assert rc == 0, err
    assert [line.split('\t')[1] for line in out.splitlines()] == load_bundle(bundles['tab']).predict(bundles['raw'].head(8)).tolist()
    assert _cli(bundles['img'], tmp_path / 'nope.npy')[0] == 2


@pytest.mark.parametrize('which,edit', [
    ('img', lambda s: s['preprocessing'][0].update(mean=[s['preprocessing'][0]['mean'][0] + 0.01])),
    ('tab', lambda s: next(st for st in s['preprocessing'] if st['type'] == 'normalize')['means'].update(bill_length_mm=45.0)),
    ('tab', lambda s: next(st for st in s['preprocessing'] if st['type'] == 'categorify')['classes']['island'].reverse()),
    ('tab', lambda s: next(st for st in s['preprocessing'] if st['type'] == 'fill_missing')['na_dict'].update(body_mass_g=9000.0)),
])
def test_verify_fails_loudly_on_corrupted_constant(bundles, tmp_path, which, edit):
    bad = _copy(bundles[which], tmp_path / 'bad')
    spec = json.loads((bad / 'bundle.json').read_text())
    edit(spec)
    (bad / 'bundle.json').write_text(json.dumps(spec))
    rc, out, err = _cli(bad, verify=True)
    assert rc == 1 and 'VERIFY FAILED' in err and 'parity check FAILED: max abs diff' in err, (rc, out, err)


def test_mlflow_alias_serves_bundle_without_torch(bundles, tmp_path, monkeypatch):
    "log_bundle -> registered model + alias; models:/name@alias loads and predicts where torch/fastai can't be imported"
    from mlopsnb.registry import log_bundle
    import mlflow
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # artifacts go to ./mlruns
    monkeypatch.delenv('MLFLOW_RUN_ID', raising=False)
    prev = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        log_bundle(bundles['img'], registered_name='mnist-test', alias='champion')
        log_bundle(bundles['tab'], registered_name='penguins-test', alias='champion')
    finally:
        mlflow.set_tracking_uri(prev)
    np.save(tmp_path / 'x.npy', bundles['x_val'])
    bundles['raw'].to_pickle(tmp_path / 'raw.pkl')
    r = _run_blocked(f'''
        import json, sys, numpy as np, pandas as pd, mlflow
        mlflow.set_tracking_uri({uri!r})
        img = mlflow.pyfunc.load_model('models:/mnist-test@champion').predict(np.load('x.npy'))
        tab = mlflow.pyfunc.load_model('models:/penguins-test@champion').predict(pd.read_pickle('raw.pkl'))
        print(json.dumps({{'img': img['prediction'].tolist(), 'tab': tab['prediction'].tolist(),
                          'loaded': sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'fastai'))}}))
    ''', tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert out['loaded'] == []
    assert out['img'] == load_bundle(bundles['img']).predict(bundles['x_val']).tolist()
    assert out['tab'] == load_bundle(bundles['tab']).predict(bundles['raw']).tolist()


def test_mlopsnb_predict_verify_cli(bundles, tmp_path):
    "The real `mlopsnb predict --verify` command: ok on the bundle, exit 1 and a loud message after a constant is corrupted"
    exe = Path(sys.executable).parent / 'mlopsnb'
    if not exe.exists(): pytest.skip('mlopsnb entry point not installed')
    np.save(tmp_path / 'x.npy', bundles['x_val'][:4])
    r = subprocess.run([str(exe), 'predict', str(bundles['img']), str(tmp_path / 'x.npy'), '--verify', '--json'],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [p['prediction'] for p in json.loads(r.stdout)['predictions']] == bundles['img_pred'][:4].tolist()
    bad = _copy(bundles['img'], tmp_path / 'bad')
    spec = json.loads((bad / 'bundle.json').read_text())
    spec['preprocessing'][0]['std'] = [s * 1.01 for s in spec['preprocessing'][0]['std']]
    (bad / 'bundle.json').write_text(json.dumps(spec))
    r = subprocess.run([str(exe), 'predict', str(bad), str(tmp_path / 'x.npy'), '--verify'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and 'VERIFY FAILED' in r.stderr and 'max abs diff' in r.stderr, (r.returncode, r.stdout, r.stderr)


def test_unseen_category_warns_naming_column_and_value(bundles):
    "An island the model never saw still predicts (fastai's #na#), but never silently"
    from mlopsnb.bundle import CategoryWarning
    row = bundles['raw'].iloc[[0]].assign(island='Atlantis')
    with pytest.warns(CategoryWarning, match=r"column 'island': 'Atlantis' never seen in training; predicted as '#na#' \(rows \[0\]\)"):
        load_bundle(bundles['tab']).predict(row)


def test_wrong_input_kind_errors_say_what_the_bundle_expects(bundles, tmp_path):
    "A tabular bundle given an image or a JSON string: exit 2 / ValueError saying what was given and what it takes"
    from PIL import Image
    Image.fromarray(bundles['x_val'][0]).save(tmp_path / 'digit.png')
    rc, out, err = _cli(bundles['tab'], tmp_path / 'digit.png', json_=True)
    assert rc == 2, (rc, out, err)
    r = json.loads(out, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert r['input'] == [str(tmp_path / 'digit.png')] and 'image files' in r['error'] and "columns ['island', 'sex'" in r['error'], r
    b = load_bundle(bundles['tab'])
    with pytest.raises(ValueError, match=r"row 0 is a str \(a JSON string\? parse it with json.loads first\), not a dict of column values; "
                                         r"this bundle takes table rows with the columns \['island'"):
        b.predict([json.dumps({'island': 'Dream'})])
