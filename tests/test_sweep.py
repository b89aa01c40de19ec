"""`mlopsnb sweep` end to end: a bad search space exits 2 before any study or kernel exists; trials are child runs of
the study's parent run, some pruned from inside the kernel with their curves kept; a sweep killed half-way and run
again ends with exactly --trials finished trials, its killed trial retried with the same parameters."""
import os, signal, subprocess, sys, time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUAD = REPO / 'tests' / 'notebooks' / 'sweep_quadratic.ipynb'
TRAIN = REPO / 'nbs' / 'jobs' / 'train_mnist.ipynb'
CLI = [sys.executable, '-c', 'import sys; from mlopsnb.cli import main; sys.exit(main())']


def env_for(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(('MLFLOW_', 'MLOPSNB_'))}
    return {**env, 'MPLBACKEND': 'Agg', 'MLOPSNB_DAEMON': '0', 'CI': '1', **extra}


def mlopsnb(tmp_path, *args, timeout=300, **kw):
    return subprocess.run([*CLI, *map(str, args)], cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          env=env_for(tmp_path), stdin=subprocess.DEVNULL, **kw)


def study_of(tmp_path):
    "The one study of the sweep in tmp_path (its journal beside the MLflow store)"
    import optuna
    from mlopsnb.study import open_storage
    (journal,) = (tmp_path / 'sweeps').glob('*.journal')
    st = open_storage(str(journal))
    (s,) = optuna.get_all_study_summaries(st)
    return optuna.load_study(study_name=s.study_name, storage=st)


def runs(tmp_path, experiment):
    from mlflow.tracking import MlflowClient
    c = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = c.get_experiment_by_name(experiment)
    return c, c.search_runs([exp.experiment_id], max_results=1000)


def test_bad_space_exits_2_before_any_kernel(tmp_path):
    for space, msg in [('lrr=loguniform:1e-4:1e-1', "unknown parameter 'lrr' for"), ('bs=choice:32,sixty', "parameter 'bs' expects int, got 'sixty'"),
                       ('arch=choice:cnn,vit', "parameter 'arch' expects one of ['cnn', 'mlp'], got 'vit'"),
                       ('bs=loguniform:16:256', 'bs is int, not a float'), ('epochs=int:8:2', 'the range is empty')]:
        r = mlopsnb(tmp_path, 'sweep', TRAIN, '--space', space, timeout=60)
        assert r.returncode == 2 and msg in r.stderr, (space, r.stderr)
    r = mlopsnb(tmp_path, 'sweep', TRAIN, '--space', 'lrr=uniform:0:1', timeout=60)
    assert "did you mean 'lr'?" in r.stderr
    assert not (tmp_path / 'sweeps').exists() and not (tmp_path / 'mlflow.db').exists()  # no study, no store, no kernel


def test_sweep_children_of_one_parent_some_pruned(tmp_path):
    r = mlopsnb(tmp_path, 'sweep', QUAD, '--space', 'x=uniform:-1:1', '--space', 'kind=all', '--trials', 8, '-j', 2,
                '--metric', 'loss', '--sampler', 'random', '--seed', 1, '-p', 'steps', 4)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'best loss=' in r.stdout and '-p x ' in r.stdout
    study = study_of(tmp_path)
    states = [t.state.name for t in study.trials]
    assert len(states) == 8 and set(states) <= {'COMPLETE', 'PRUNED'}, states
    assert 'PRUNED' in states, states
    c, rs = runs(tmp_path, 'sweep_quadratic')
    (parent,) = [x for x in rs if x.data.tags.get('mlopsnb.sweep') == 'parent']
    children = [x for x in rs if x is not parent]
    assert len(children) == 8 and all(x.data.tags['mlflow.parentRunId'] == parent.info.run_id for x in children)
    by_trial = {int(x.data.tags['mlopsnb.trial']): x for x in children}
    for t in study.trials:
        run = by_trial[t.number]
        assert run.data.tags['mlopsnb.trial_state'] == t.state.name and run.info.status == 'FINISHED'
        assert t.user_attrs['mlopsnb.run_id'] == run.info.run_id
        curve = c.get_metric_history(run.info.run_id, 'loss')
        assert len(curve) == (4 if t.state.name == 'COMPLETE' else t.user_attrs['mlopsnb.pruned_at'] + 1)  # a pruned trial keeps its curve
    best = study.best_trial
    assert parent.data.tags['best.x'] == repr(best.params['x']) or float(parent.data.tags['best.x']) == pytest.approx(best.params['x'])
    assert parent.data.metrics['best_loss'] == pytest.approx(best.value)
    arts = {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert {'optimization_history.png', 'parallel_coordinate.png', 'best_params.json'} <= arts, arts
    # the same command again: the study is full, nothing runs
    again = mlopsnb(tmp_path, 'sweep', QUAD, '--space', 'x=uniform:-1:1', '--space', 'kind=all', '--trials', 8, '-j', 2,
                    '--metric', 'loss', '--sampler', 'random', '--seed', 1, '-p', 'steps', 4)
    assert again.returncode == 0 and len(study_of(tmp_path).trials) == 8, again.stderr


@pytest.mark.slow  # ~60 s
def test_killed_sweep_continues_to_exactly_trials(tmp_path):
    args = ['sweep', QUAD, '--space', 'x=uniform:-1:1', '--trials', 5, '--metric', 'loss', '--pruner', 'none', '-p', 'sleep', 1.5]
    p = subprocess.Popen([*CLI, *map(str, args)], cwd=tmp_path, env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 180:
            time.sleep(0.5)
            if (tmp_path / 'sweeps').exists() and sum(t.state.name == 'COMPLETE' for t in study_of(tmp_path).trials) >= 2 and \
               any(t.state.name == 'RUNNING' for t in study_of(tmp_path).trials): break
        os.killpg(p.pid, signal.SIGKILL)  # the sweep and its kernel, mid-trial
    finally:
        p.wait(30)
    killed = [t for t in study_of(tmp_path).trials if t.state.name == 'RUNNING']
    assert len(killed) == 1
    r = mlopsnb(tmp_path, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    trials = study_of(tmp_path).trials
    done = [t for t in trials if t.state.name == 'COMPLETE']
    assert len(done) == 5, [(t.number, t.state.name) for t in trials]
    (failed,) = [t for t in trials if t.state.name == 'FAIL']
    assert failed.number == killed[0].number and failed.user_attrs['mlopsnb.died']
    (retry,) = [t for t in trials if t.user_attrs.get('mlopsnb.retry_of') == failed.number]
    assert retry.params == failed.params and retry.state.name == 'COMPLETE'
    c, rs = runs(tmp_path, 'sweep_quadratic')
    finished = {x.data.tags['mlopsnb.trial'] for x in rs if x.data.tags.get('mlopsnb.trial_state') == 'COMPLETE'}
    assert finished == {str(t.number) for t in done}  # every finished trial has its run
