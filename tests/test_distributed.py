"2-process gloo DDP on CPU against one process with the same global batch and seed: equal weights, one MLflow run from rank 0"
import argparse, os, subprocess, sys, textwrap
from pathlib import Path
import pytest

SCRIPT = textwrap.dedent('''
    import sys, torch, torch.nn as nn
    from functools import partial
    from fastai.learner import Learner
    from fastai.optimizer import SGD
    from fastai.metrics import accuracy
    import fastai.callback.progress
    from mlopsnb.datasets import digits
    from mlopsnb.loaders import tensor_dls, NormalizeImages
    from mlopsnb.core import seed_everything
    from mlopsnb.ddp import distributed
    from mlopsnb.distributed import is_main_process, world_size
    out, track = sys.argv[1], sys.argv[2] == '1'
    d = digits(); x, y = torch.from_numpy(d.x), torch.from_numpy(d.y)      # (1797, 8, 8) uint8, (1797,)
    seed_everything(0)
    dls = tensor_dls(x[:1024], y[:1024], x[1500:], y[1500:], bs=64, seed=0, device='cpu', tfms=[NormalizeImages(0.31, 0.38)])
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    cbs = []
    if track:
        from mlopsnb.tracking_callback import MLflowCallback
        cbs.append(MLflowCallback(experiment='ddp-test', log_plots=False))
    learn = Learner(dls, model, loss_func=nn.CrossEntropyLoss(), opt_func=partial(SGD, mom=0.9), lr=0.05, metrics=accuracy, cbs=cbs)
    with distributed(learn), learn.no_bar(): learn.fit(2)
    if is_main_process():
        torch.save({'sd': learn.model.state_dict(), 'rec': learn.recorder.values, 'world': world_size()}, out)
''')

def _env(tmp: Path) -> dict:
    root = Path(__file__).resolve().parents[1]
    return {**os.environ, 'MLFLOW_TRACKING_URI': f"sqlite:///{tmp/'mlflow.db'}", 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg',
            'PYTHONPATH': f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

def test_ddp_two_procs_match_one(tmp_path, monkeypatch):
    import torch
    from mlopsnb.distributed import launch_command
    script = tmp_path/'train.py'; script.write_text(SCRIPT)
    (tmp_path/'one').mkdir()
    env = _env(tmp_path)
    for k, v in env.items(): monkeypatch.setenv(k, v)
    # the single-process reference runs alongside the 2-process job (no tracking: only the DDP job's runs are counted)
    ref = subprocess.Popen([sys.executable, str(script), str(tmp_path/'w1.pt'), '0'], env=env, cwd=tmp_path/'one',
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    monkeypatch.chdir(tmp_path)
    rc = launch_command(argparse.Namespace(nprocs=2, target=str(script), args=[str(tmp_path/'w2.pt'), '1']))
    out1, _ = ref.communicate(timeout=300)
    assert rc == 0
    assert ref.returncode == 0, out1[-3000:]
    one, two = (torch.load(tmp_path/f, weights_only=False) for f in ('w1.pt', 'w2.pt'))
    assert (one['world'], two['world']) == (1, 2)
    for k, a in one['sd'].items():
        rel = ((a - two['sd'][k]).abs().max() / a.abs().max()).item()
        assert rel <= 1e-6, f"{k}: relative difference {rel:.2e}"
    # metrics reduced over ranks: the whole validation set's loss and accuracy
    for r1, r2 in zip(one['rec'], two['rec']):
        for a, b in zip(r1, r2): assert abs(float(a) - float(b)) <= 1e-4 * max(1.0, abs(float(a))), (one['rec'], two['rec'])
    import mlflow
    mlflow.set_tracking_uri(env['MLFLOW_TRACKING_URI'])
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1, runs[['run_id', 'status']]
    assert runs.status.iloc[0] == 'FINISHED'
    assert 'metrics.accuracy' in runs.columns and abs(runs['metrics.accuracy'].iloc[0] - float(two['rec'][-1][2])) < 1e-6

def test_launch_usage_errors(tmp_path):
    from mlopsnb.distributed import launch_command
    assert launch_command(argparse.Namespace(nprocs=2, target=str(tmp_path/'missing.py'), args=[])) == 2
    nb = tmp_path/'a.ipynb'; nb.write_text('{}')
    assert launch_command(argparse.Namespace(nprocs=2, target=str(nb), args=['--bad'])) == 2
    bad = tmp_path/'fail.py'; bad.write_text('import sys; sys.exit(3)')
    assert launch_command(argparse.Namespace(nprocs=2, target=str(bad), args=[])) == 1

def test_launch_checks_notebook_params_first(tmp_path, capsys, monkeypatch):
    "An unknown or mistyped notebook parameter is a usage error (exit 2) found before any process starts"
    import nbformat
    from mlopsnb import distributed as d
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("epochs = 5\nlr = 0.1"); params.metadata['tags'] = ['parameters']
    nb.cells = [params]; nbformat.write(nb, tmp_path/'train.ipynb')
    started = []
    monkeypatch.setattr(d.subprocess, 'run', lambda *a, **k: started.append(a) or argparse.Namespace(returncode=0))
    ns = lambda *args: argparse.Namespace(nprocs=2, target=str(tmp_path/'train.ipynb'), args=list(args))
    assert d.launch_command(ns('-p', 'epoch', '3')) == 2
    assert "unknown parameter 'epoch'" in capsys.readouterr().err
    assert d.launch_command(ns('epochs=many')) == 2
    assert started == []                                   # no torchrun, no rank
    assert d.launch_command(ns('-p', 'epochs', '3', 'lr=0.5')) == 0 and len(started) == 1   # a valid call does launch

@pytest.mark.slow
def test_launch_notebook_two_ranks(tmp_path):
    "`mlopsnb launch -n 2 NOTEBOOK -p ...`: every rank runs the notebook with the injected parameters; DDP trains across them"
    import nbformat
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("epochs = 5\nout = 'x'"); params.metadata['tags'] = ['parameters']
    body = SCRIPT.split("out, track = sys.argv[1], sys.argv[2] == '1'")[1].replace('learn.fit(2)', 'learn.fit(epochs)')
    nb.cells = [params, nbformat.v4.new_code_cell(SCRIPT.split("out, track")[0] + "track = False\n" + body)]
    nbformat.write(nb, tmp_path/'train.ipynb')
    r = subprocess.run([str(Path(sys.executable).parent/'mlopsnb'), 'launch', '-n', '2', str(tmp_path/'train.ipynb'),
                        '-p', 'epochs', '1', f"out={tmp_path/'w.pt'}"], env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    import torch
    got = torch.load(tmp_path/'w.pt', weights_only=False)
    assert got['world'] == 2 and len(got['rec']) == 1   # 2 ranks, and the injected epochs=1 was used
