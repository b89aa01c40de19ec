"""What `mlflow ui` shows for a tracked training run, checked through MlflowClient: params, per-epoch metrics, tags,
the loss-curve and confusion-matrix PNGs and environment.json. The store is $MLOPSNB_TEST_STORE (kept, for
`mlflow ui --backend-store-uri sqlite:///$MLOPSNB_TEST_STORE/mlflow.db`) or a pytest temp folder."""
import json, os
from pathlib import Path

import pytest, torch, torch.nn as nn

@pytest.fixture(scope='module')
def tracked_run(tmp_path_factory):
    import mlflow
    from fastai.metrics import accuracy
    from mlopsnb.callbacks import mlops_learner
    from mlopsnb.core import fingerprint
    from mlopsnb.datasets import digits, stratified_split
    from mlopsnb.loaders import tensor_dls, NormalizeImages
    from mlopsnb.tracking import start_run
    store = Path(os.environ.get('MLOPSNB_TEST_STORE') or tmp_path_factory.mktemp('store'))
    store.mkdir(parents=True, exist_ok=True)
    uri = f'sqlite:///{store.resolve()}/mlflow.db'
    old_env, old_uri, old_cwd = os.environ.get('MLFLOW_TRACKING_URI'), mlflow.get_tracking_uri(), os.getcwd()
    os.environ['MLFLOW_TRACKING_URI'] = uri; mlflow.set_tracking_uri(uri); os.chdir(store)
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        d = digits()
        trn, val = stratified_split(d.y, valid_pct=0.2, seed=0)
        dls = tensor_dls(torch.from_numpy(d.x[trn]), torch.from_numpy(d.y[trn]), torch.from_numpy(d.x[val]), torch.from_numpy(d.y[val]),
                         bs=64, device='cpu', tfms=[NormalizeImages(0.3, 0.3, scale=16.)])
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        fp = fingerprint(d.x[trn])
        with start_run('test_tracking', params={'dataset': 'digits'}, run_name='digits-mlp', data_fingerprint=fp) as run:
            learn = mlops_learner(dls, model, nn.CrossEntropyLoss(), metrics=accuracy, lr=3e-3, progress='none',
                                  checkpoint_dir=store / 'ck')
            learn.logger = lambda *a, **k: None
            learn.fit_one_cycle(2)
        print(f"test store: {uri}, run {run.info.run_id}")
        yield mlflow.MlflowClient(), run.info.run_id, learn, fp
    finally:
        torch.set_num_threads(threads); os.chdir(old_cwd); mlflow.set_tracking_uri(old_uri)
        if old_env is None: os.environ.pop('MLFLOW_TRACKING_URI', None)
        else: os.environ['MLFLOW_TRACKING_URI'] = old_env

def test_params(tracked_run):
    client, rid, learn, _ = tracked_run
    p = client.get_run(rid).data.params
    assert p['dataset'] == 'digits' and p['epochs'] == '2' and p['bs'] == '64' and p['optimizer'] == 'Adam'
    assert float(p['lr']) == 3e-3 and p['precision'] == 'float32' and p['model'] == 'Sequential'
    assert int(p['n_params']) == sum(x.numel() for x in learn.model.parameters())

def test_per_epoch_metrics(tracked_run):
    client, rid, learn, _ = tracked_run
    for name in ('train_loss', 'valid_loss', 'accuracy', 'samples_per_s', 'step_ms', 'peak_mem_mb'):
        hist = client.get_metric_history(rid, name)
        assert sorted(m.step for m in hist) == [0, 1], (name, hist)
    acc = {m.step: m.value for m in client.get_metric_history(rid, 'accuracy')}
    assert acc[1] == pytest.approx(float(learn.recorder.values[-1][2])) and acc[1] > 0.8
    assert client.get_run(rid).info.status == 'FINISHED'

def test_tags(tracked_run):
    client, rid, _, fp = tracked_run
    tags = client.get_run(rid).data.tags
    assert tags['mlopsnb.data_fingerprint'] == fp
    assert tags['mlopsnb.git_dirty'] in ('True', 'False', 'None', '') and len(tags['mlopsnb.env_hash']) == 16  # '': outside a repository (mlopsnb.store.run_tags)
    assert 'mlopsnb.git_sha' in tags and tags['mlflow.runName'] == 'digits-mlp'

def test_artifacts(tracked_run):
    client, rid, _, _ = tracked_run
    names = {f.path for f in client.list_artifacts(rid)}
    assert {'loss_curve.png', 'confusion_matrix.png', 'environment.json'} <= names, names
    for png in ('loss_curve.png', 'confusion_matrix.png'):
        data = Path(client.download_artifacts(rid, png)).read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 5000, png
    env = json.loads(Path(client.download_artifacts(rid, 'environment.json')).read_text())
    assert env['torch'] == torch.__version__ and 'packages' in env and 'git' in env

def test_runs_table(tracked_run):
    from mlopsnb.runs import runs_table
    _, rid, _, _ = tracked_run
    t = runs_table('test_tracking')
    row = t[t.run_id == rid].iloc[0]
    assert row['params.dataset'] == 'digits' and row['metrics.accuracy'] > 0.8 and row['status'] == 'FINISHED'

def test_dataset_inputs(tracked_run):
    "mlflow ui's Datasets panel: the training and validation tensors, fingerprinted, with their schema"
    from mlopsnb.core import fingerprint
    client, rid, learn, _ = tracked_run
    ins = {i.dataset.name: i for i in client.get_run(rid).inputs.dataset_inputs}
    assert set(ins) == {'tensors-train', 'tensors-valid'}, ins
    assert {n: i.tags[0].value for n, i in ins.items()} == {'tensors-train': 'training', 'tensors-valid': 'validation'}
    assert ins['tensors-train'].dataset.digest == fingerprint([fingerprint(t) for t in learn.dls.train.tensors])
    assert json.loads(ins['tensors-train'].dataset.schema)['mlflow_colspec'][0]['tensor-spec']['shape'] == [-1, 8, 8]
