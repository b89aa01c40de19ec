"""The whole continuous-training loop through the real commands, on a real MLflow store: a training job's model is promoted
to champion and served; shifted requests arrive; `mlopsnb monitor --retrain` finds drift (exit 3) and runs the training job
again, its run tagged with what it replaces and what triggered it; `mlopsnb promote` moves the alias only through its
gate; `/admin/reload` serves the new version."""
import json, os, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

from mlopsnb.datasets import penguins
from mlopsnb.serve import serving

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / 'nbs' / 'jobs' / 'train_tabular_regression.ipynb'
TOKEN = 'loop-token'


def _cli(*args, env, cwd, timeout=600):
    return subprocess.run([sys.executable, '-c', 'import sys; from mlopsnb.cli import main; sys.exit(main())', *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def _post(url, obj=None, headers=None):
    req = urllib.request.Request(url, data=json.dumps(obj).encode() if obj is not None else b'', method='POST',
                                 headers={'content-type': 'application/json', **(headers or {})})
    with urllib.request.urlopen(req, timeout=60) as r: return json.loads(r.read())


def test_serve_monitor_retrain_promote_reload(tmp_path):
    from mlflow import MlflowClient
    env = {**os.environ, 'MLFLOW_TRACKING_URI': f"sqlite:///{tmp_path / 'mlflow.db'}", 'MLOPSNB_DAEMON': '0'}
    client = MlflowClient(env['MLFLOW_TRACKING_URI'])
    first = _cli('run', JOB, '-p', 'epochs', '2', '--out', tmp_path / 'runs', env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    exp = client.get_experiment_by_name('train_tabular_regression').experiment_id
    (champion_run,) = client.search_runs([exp])
    p1 = _cli('promote', champion_run.info.run_id, '--name', 'penguin_mass', env=env, cwd=tmp_path)
    assert p1.returncode == 0, p1.stdout + p1.stderr
    assert str(client.get_model_version_by_alias('penguin_mass', 'champion').version) == '1'

    rows = penguins().dropna(subset=['body_mass_g']).sample(240, random_state=3)
    shifted = rows.assign(flipper_length_mm=rows.flipper_length_mm * 1.15).drop(columns='body_mass_g')
    shifted = [{k: (None if v != v else v) for k, v in r.items()} for r in shifted.to_dict('records')]
    with serving('models:/penguin_mass@champion', log=tmp_path / 'log', env={**env, 'MLOPSNB_ADMIN_TOKEN': TOKEN}, timeout=180) as url:
        for i in range(0, len(shifted), 40): assert len(_post(f"{url}/predict", {'rows': shifted[i:i + 40]})['predictions']) == 40
        time.sleep(1.5)  # the request log flushes every second
        mon = _cli('monitor', 'models:/penguin_mass@champion', '--log', tmp_path / 'log', '--fail-on', 'drift',
                   '--retrain', JOB, '-p', 'epochs', '3', '--html', tmp_path / 'report.html', env=env, cwd=tmp_path)
        print(mon.stdout[-3000:])
        assert mon.returncode == 3, mon.stdout[-3000:] + mon.stderr[-3000:]
        assert 'flipper_length_mm drifted' in mon.stdout
        monitor_run = mon.stdout.split('MLflow run: ')[1].split()[0]
        assert client.get_run(monitor_run).data.tags['mlopsnb.monitor_of'] == champion_run.info.run_id

        retrained = [r for r in client.search_runs([exp]) if r.data.tags.get('mlopsnb.triggered_by') == monitor_run]
        assert len(retrained) == 1 and retrained[0].data.tags['mlopsnb.retrain_of'] == champion_run.info.run_id
        new_run = retrained[0].info.run_id
        blocked = _cli('promote', new_run, '--name', 'penguin_mass', '--require', 'mae<=0.001', env=env, cwd=tmp_path)
        assert blocked.returncode == 1, blocked.stdout + blocked.stderr                         # the gate holds the alias
        assert str(client.get_model_version_by_alias('penguin_mass', 'champion').version) == '1'
        promoted = _cli('promote', new_run, '--name', 'penguin_mass', '--require', 'mae<=5000', env=env, cwd=tmp_path)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        new_version = str(client.get_model_version_by_alias('penguin_mass', 'champion').version)
        assert new_version != '1'
        body = _post(f"{url}/admin/reload", None, {'authorization': f'Bearer {TOKEN}'})
        assert body['models'][0]['version'] == new_version, body
        assert _post(f"{url}/predict", {'rows': shifted[:1]})['model']['version'] == new_version
