"""Lineage in MLflow's own terms: the `make demo` job (`nbs/jobs/train_mnist.ipynb`), run through `mlopsnb run`, ends
with a run whose page lists its logged model (the exported bundle, as a pyfunc) and its training/validation datasets,
checked through MLflow's API as the UI reads them."""
import os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('lineage')
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    env = {**os.environ, 'MLOPSNB_DAEMON': '0', 'MLOPSNB_SMOKE': '1', 'MLFLOW_TRACKING_URI': uri, 'MPLBACKEND': 'Agg'}
    env.pop('MLFLOW_RUN_ID', None)
    exe = Path(sys.executable).parent / 'mlopsnb'
    cmd = [str(exe), 'run', str(ROOT / 'nbs/jobs/train_mnist.ipynb'), '-p', 'export', 'True', '--out', str(tmp / 'out')]
    r = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    import mlflow
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and 'final_valid_accuracy' in runs[0].data.metrics, [(x.info.run_id, x.info.run_name) for x in runs]  # one job, one run
    return client, runs[0], tmp, uri


def test_run_lists_its_logged_model(demo_run):
    client, run, tmp, uri = demo_run
    outs = run.outputs.model_outputs if run.outputs else []
    assert len(outs) == 1, run.outputs
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    assert [m.model_id for m in models] == [outs[0].model_id]
    m = models[0]
    fp = run.data.tags.get('mlopsnb.data_fingerprint')
    assert fp and m.params['data_fingerprint'] == fp and m.tags['mlopsnb.data_fingerprint'] == fp
    assert m.params['task'] == 'classification' and m.params['input_kind'] == 'image'
    assert {'bundle_valid_accuracy', 'bundle_parity_max_abs_diff'} <= {x.key for x in m.metrics}
    import mlflow, numpy as np
    x = np.load(tmp / 'out' / 'bundle' / 'parity.npz')['inputs'][:3]
    prev = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try: pred = mlflow.pyfunc.load_model(f"models:/{m.model_id}").predict(x)  # the logged model serves the bundle
    finally: mlflow.set_tracking_uri(prev)
    from mlopsnb.bundle import load_bundle
    assert pred['prediction'].tolist() == load_bundle(tmp / 'out' / 'bundle').predict(x).tolist()


def test_run_lists_its_datasets(demo_run):
    "The training and validation data as dataset inputs of the run (logged by the tracking callback)"
    client, run, tmp, uri = demo_run
    inputs = run.inputs.dataset_inputs if run.inputs else []
    contexts = sorted(t.value for d in inputs for t in d.tags if t.key == 'mlflow.data.context')
    assert contexts == ['training', 'validation'], [(d.dataset.name, [(t.key, t.value) for t in d.tags]) for d in inputs]
    assert all(d.dataset.digest for d in inputs)
