"""Drift monitoring on real data with planted drift, and on none: the MNIST CNN bundle of the `bundles` fixture (rotated,
inverted and brightened digits; the false-alarm rate on untouched held-out digits, measured), penguins through the real
`mlopsnb monitor` command (exit codes, the HTML report looked at in headless Chromium, the MLflow run)."""
import json, os, shutil, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest

from mlopsnb.bundle import Bundle
from mlopsnb.datasets import mnist_5k, penguins, stratified_split
from mlopsnb.monitor import monitor
from mlopsnb.monitor_data import predict_records
from mlopsnb.serve_inputs import image_summary


def write_log(folder: Path, b: Bundle, x: np.ndarray, labels=None) -> Path:
    "A request log as `mlopsnb serve` writes it, for uint8 images `x`: one record per image, feedback lines for `labels`"
    recs, failed = predict_records(b, x, [image_summary(a) for a in x])
    assert failed == 0
    folder.mkdir(parents=True, exist_ok=True)
    t = time.time() - len(recs)
    lines = [{'time': t + i, 'request_id': f'r{i}', 'index': 0, 'model': 'm', 'version': 'v', 'role': 'champion',
              'input': r['input'], 'prediction': r['prediction'], 'probability': r['probability']} for i, r in enumerate(recs)]
    if labels is not None:
        lines += [{'time': t + len(recs) + i, 'type': 'feedback', 'request_id': f'r{i}', 'index': 0, 'label': str(l)} for i, l in enumerate(labels)]
    (folder / 'requests-test-1.jsonl').write_text(''.join(json.dumps(l) + '\n' for l in lines))
    return folder


@pytest.fixture(scope='module')
def held_out():
    "MNIST digits the fixture's CNN never saw, in training or validation (`mnist_cnn_learner(1000, 300, 1)`)"
    from _trained import mnist_split
    data, trn, val = mnist_split(1000, 300)
    idx = np.setdiff1d(np.arange(len(data.y)), np.concatenate([trn, val]))
    return data.x[idx], np.array(data.classes)[data.y[idx]]


@pytest.mark.parametrize('name', ['inverted', 'brightened', 'rotated'])
def test_planted_image_drift_is_found_and_named(bundles, held_out, tmp_path, name):
    b = Bundle(bundles['img'])
    x = held_out[0][np.random.default_rng(1).permutation(len(held_out[0]))[:200]]
    shifted = {'inverted': lambda a: 255 - a, 'brightened': lambda a: np.clip(a.astype(np.int16) + 60, 0, 255).astype(np.uint8),
               'rotated': lambda a: np.ascontiguousarray(np.rot90(a, 1, axes=(1, 2)))}[name](x)
    res = monitor(b, log=write_log(tmp_path / 'log', b, shifted))
    print(name, res.verdict, res.drifted)
    assert res.verdict == 'drift', res.reasons
    if name == 'rotated':  # the same pixels, moved: the image statistics cannot see it, the model's embedding does
        assert 'mean_intensity' not in res.drifted and any(f.startswith('embedding_') for f in res.drifted), res.drifted
    else:
        assert res.features[0].feature in ('mean_intensity', 'std_intensity') and res.features[0].drifted, res.features[0]


def test_false_alarm_rate_on_untouched_digits_is_at_most_5_percent(bundles, held_out, tmp_path):
    "20 random windows of 200 held-out digits with their labels: at most one may be called drift"
    b = Bundle(bundles['img'])
    x, y = held_out
    rng = np.random.default_rng(2)
    verdicts = []
    for w in range(20):
        i = rng.choice(len(x), 200, replace=False)
        res = monitor(b, log=write_log(tmp_path / f'w{w}', b, x[i], y[i]))
        verdicts.append(res.verdict)
        if res.verdict != "ok": print(res.verdict, res.reasons)
        assert res.accuracy is not None and res.accuracy['n_labelled'] == 200
    alarms = verdicts.count('drift')
    print(f"false-alarm rate: {alarms}/20 windows of 200 untouched digits called drift; verdicts {verdicts}")
    assert alarms <= 1, verdicts


def _cli(*args, env=None, cwd=None, timeout=300):
    "The real `mlopsnb` command in a fresh process"
    return subprocess.run([sys.executable, '-c', 'import sys; from mlopsnb.cli import main; sys.exit(main())', *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def _screenshot_report(html_path: Path, out: Path) -> int:
    "Open the report in headless Chromium, save a full-page screenshot; the number of charts that rendered"
    chromium = '/usr/bin/chromium' if Path('/usr/bin/chromium').exists() else shutil.which('chromium')
    if not chromium: pytest.skip("no Chromium: apt-get install chromium (Debian's; .ci/run installs it)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=['--no-sandbox', '--disable-dev-shm-usage'])
        try:
            pg = b.new_page(viewport={'width': 1200, 'height': 900})
            requests = []
            pg.on('request', lambda r: requests.append(r.url) if not r.url.startswith(('file:', 'data:')) else None)
            pg.goto(html_path.resolve().as_uri())
            pg.screenshot(path=str(out), full_page=True)
            rendered = pg.evaluate("Array.from(document.images).filter(i => i.complete && i.naturalWidth > 100).length")
        finally: b.close()
    assert requests == [], f"the report fetched {requests}"
    return rendered


def test_monitor_command_planted_shift_exit_3_report_and_mlflow_run(bundles, tmp_path):
    "Penguins 10% heavier: exit 3 with --fail-on drift, body_mass_g named first, an HTML report that renders offline, an MLflow run"
    rows = penguins().sample(200, random_state=1)
    rows.assign(body_mass_g=rows.body_mass_g * 1.1).to_csv(tmp_path / 'heavier.csv', index=False)
    rows.to_csv(tmp_path / 'same.csv', index=False)
    env = {**os.environ, 'MLFLOW_TRACKING_URI': f"sqlite:///{tmp_path / 'mlflow.db'}"}
    r = _cli('monitor', bundles['tab'], '--data', tmp_path / 'heavier.csv', '--fail-on', 'drift', '--html', tmp_path / 'report.html', env=env, cwd=tmp_path)
    print(r.stdout)
    assert r.returncode == 3, r.stdout + r.stderr
    table = r.stdout.splitlines()
    first = table[next(i for i, l in enumerate(table) if l.startswith('feature')) + 1]
    assert first.startswith('body_mass_g') and first.rstrip().endswith('DRIFT'), first
    shot = tmp_path / 'monitor_report.png'
    assert _screenshot_report(tmp_path / 'report.html', shot) >= 3 and shot.stat().st_size > 30_000
    keep = Path(__file__).resolve().parents[1] / '_proc' / 'screenshots'  # git-ignored copy for a person to look at
    keep.mkdir(parents=True, exist_ok=True); shutil.copy(shot, keep / shot.name)

    from mlflow import MlflowClient
    c = MlflowClient(env['MLFLOW_TRACKING_URI'])
    runs = c.search_runs([c.get_experiment_by_name('monitor').experiment_id])
    assert len(runs) == 1 and runs[0].data.tags['mlopsnb.monitor_verdict'] == 'drift'
    assert runs[0].data.metrics['effect.body_mass_g'] > 0.3 and runs[0].data.metrics['drift'] == 1.0
    assert {a.path for a in c.list_artifacts(runs[0].info.run_id, 'monitor')} == {'monitor/report.html', 'monitor/result.json'}

    same = _cli('monitor', bundles['tab'], '--data', tmp_path / 'same.csv', '--fail-on', 'drift', '--json', '--no-track', env=env, cwd=tmp_path)
    assert same.returncode == 0 and json.loads(same.stdout)['verdict'] != 'drift', same.stdout[-2000:] + same.stderr


def test_monitor_command_unseen_category_and_missing_column(bundles, tmp_path):
    rows = penguins().sample(200, random_state=2)
    rows.assign(island=['Atlantis'] * 20 + list(rows.island[20:])).to_csv(tmp_path / 'atlantis.csv', index=False)
    rows.drop(columns='flipper_length_mm').to_csv(tmp_path / 'noflipper.csv', index=False)
    r = _cli('monitor', bundles['tab'], '--data', tmp_path / 'atlantis.csv', '--json', '--no-track')
    assert r.returncode == 0, r.stderr
    island = next(f for f in json.loads(r.stdout)['features'] if f['feature'] == 'island')
    assert island['unseen_values'] == ['Atlantis'] and island['unseen'] == 0.1, island
    bad = _cli('monitor', bundles['tab'], '--data', tmp_path / 'noflipper.csv', '--no-track')
    assert bad.returncode == 2 and "lacks the columns ['flipper_length_mm']" in bad.stderr, bad.stderr
    none = _cli('monitor', bundles['tab'], '--data', tmp_path / 'nothing.csv', '--no-track')
    assert none.returncode == 2 and 'no such file' in none.stderr, none.stderr
