"""`mlopsnb promote` as a CI step runs it: the real command against a throwaway sqlite store. The first model passes a
`champion` gate (there is none yet), a better one moves the alias, a worse one exits 1 and leaves it, and usage errors
exit 2 without registering anything."""
import contextlib, io, json, os, subprocess, sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _toy_bundles import toy_image_bundle  # noqa: E402


@pytest.fixture
def store(tmp_path, monkeypatch):
    "A sqlite store in tmp_path, the environment of a command using it, and `job(accuracy)`: a finished run with its logged bundle model"
    import mlflow
    from mlopsnb.registry import log_bundle
    from mlopsnb.store import experiment_id
    monkeypatch.delenv('MLFLOW_RUN_ID', raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bundle = toy_image_bundle(tmp_path / 'bundle')[0]
    client = mlflow.MlflowClient(uri)
    eid = experiment_id('train', client)

    def job(accuracy):
        prev = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)
        try:
            with mlflow.start_run(experiment_id=eid) as run, contextlib.redirect_stderr(io.StringIO()):
                mlflow.log_metric('accuracy', accuracy)
                log_bundle(bundle)
        finally: mlflow.set_tracking_uri(prev)
        return run.info.run_id

    env = {**{k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')}, 'MLFLOW_TRACKING_URI': uri, 'MLOPSNB_DAEMON': '0'}
    return {'uri': uri, 'env': env, 'job': job, 'client': client, 'dir': tmp_path}


def promote(store, *args):
    return subprocess.run([str(BIN / 'mlopsnb'), 'promote', *map(str, args)], capture_output=True, text=True, timeout=120, env=store['env'],
                          cwd=store['dir'], stdin=subprocess.DEVNULL)


def champion(store) -> str:
    return str(store['client'].get_model_version_by_alias('digits', 'champion').version)


def test_promote_gates_the_champion_alias(store):
    r = promote(store, store['job'](0.90), '--name', 'digits', '--require', 'accuracy>=champion')
    assert r.returncode == 0, r.stderr
    assert 'no champion yet' in r.stdout and 'promoted: digits@champion -> version 1 (was nowhere)' in r.stdout, r.stdout
    assert champion(store) == '1'

    r = promote(store, store['job'](0.95), '--name', 'digits', '--require', 'accuracy>=champion', '--require', 'accuracy>=0.9', '--json')
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out['name'], out['version'], out['alias'], out['promoted'], out['previous_version']) == ('digits', '2', 'champion', True, '1')
    assert [(g['gate'], g['candidate'], g['champion'], g['passed']) for g in out['gates']] == \
           [('accuracy>=champion', 0.95, 0.9, True), ('accuracy>=0.9', 0.95, 0.9, True)]
    assert champion(store) == '2'
    assert store['client'].get_model_version('digits', '2').tags['mlopsnb.promoted_from'] == '1'

    r = promote(store, store['job'](0.80), '--name', 'digits', '--require', 'accuracy>=champion')
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert 'FAIL' in r.stdout and 'not promoted: 1 of 1 gate failed; digits@champion stays at version 2' in r.stdout, r.stdout
    assert champion(store) == '2'  # the alias did not move
    assert store['client'].get_model_version('digits', '3').tags['mlopsnb.promotion'] == 'rejected'  # registered, for the record


def test_promote_usage_errors_exit_2_and_register_nothing(store):
    rid = store['job'](0.9)
    r = promote(store, rid, '--name', 'digits', '--require', 'accuracy=>champion')
    assert r.returncode == 2 and "--require 'accuracy=>champion': expected METRIC OP TARGET" in r.stderr, r.stderr
    r = promote(store, '0' * 32, '--name', 'digits')
    assert r.returncode == 2 and f"no run {'0' * 32}" in r.stderr, r.stderr
    r = promote(store, store['dir'], '--name', 'digits')
    assert r.returncode == 2 and 'not a model bundle' in r.stderr, r.stderr
    r = promote(store, rid)
    assert r.returncode == 2 and '--name' in r.stderr
    assert store['client'].search_model_versions("name='digits'") == []
