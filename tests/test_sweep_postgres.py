"""Two `mlopsnb sweep` processes on one study in a real PostgreSQL server (started by the fixture, see _postgres.py):
both finish, the study holds exactly --trials finished trials, no trial number twice, each trial exactly one MLflow
child run of the one parent run (both processes share one sqlite MLflow store). The test holds the study's slot lock
while the processes start, so the workers of both queue on the PostgreSQL advisory lock and claim at the same moment."""
import os, signal, subprocess, sys, time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _postgres import missing_reason, postgres_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUAD = REPO / 'tests' / 'notebooks' / 'sweep_quadratic.ipynb'
CLI = [sys.executable, '-c', 'import sys; from mlopsnb.cli import main; sys.exit(main())']
TRIALS = 8


@pytest.fixture(scope='module')
def postgres_url():
    "postgresql://postgres@127.0.0.1:PORT/mlopsnb on a throwaway server, stopped and removed after the module"
    why = missing_reason()
    if why: pytest.skip(why)
    pytest.importorskip('psycopg2', reason='psycopg2-binary (in the dev extra) is needed to reach PostgreSQL')
    with postgres_server() as url: yield url


def test_two_sweeps_share_one_study_on_postgres(tmp_path, postgres_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith(('MLFLOW_', 'MLOPSNB_'))}
    env.update(MPLBACKEND='Agg', MLOPSNB_DAEMON='0', CI='1', MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    args = ['sweep', QUAD, '--space', 'x=uniform:-1:1', '--space', 'kind=all', '--trials', TRIALS, '-j', 2, '--metric', 'loss',
            '--storage', postgres_url, '--study', 'shared', '-p', 'steps', 4, '-p', 'sleep', 0.2]
    from sqlalchemy import text
    from mlopsnb.study import open_storage, slot_lock
    procs = []
    try:
        with slot_lock(postgres_url, 'shared'):  # held here: every worker of both processes queues behind it at its first claim
            for i in range(2):  # the same command, twice, at once
                (tmp_path / f"w{i}").mkdir()
                procs.append(subprocess.Popen([*CLI, *map(str, args)], cwd=tmp_path / f"w{i}", env=env, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL, start_new_session=True))
            t0, waiting = time.time(), 0
            while waiting < 2:  # a worker of each process waits on the PostgreSQL advisory lock (its other one on the process's thread lock)
                assert time.time() - t0 < 90 and all(p.poll() is None for p in procs), f"{waiting} workers wait on the slot lock"
                time.sleep(0.2)
                with open_storage(postgres_url).engine.connect() as c:
                    waiting = c.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).scalar()
        outs = [p.communicate(timeout=240)[0] for p in procs]  # released: the four workers claim at once
    finally:  # a failed test leaves no sweep running
        for p in procs:
            if p.poll() is None: os.killpg(p.pid, signal.SIGKILL); p.wait(30)  # the sweep and its kernels
    for p, out in zip(procs, outs): assert p.returncode == 0, out
    ran = [sum(l.startswith('trial ') and ' in ' in l for l in out.splitlines()) for out in outs]
    assert all(ran), (ran, outs)  # both processes ran trials

    import optuna
    study = optuna.load_study(study_name='shared', storage=open_storage(postgres_url))
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    assert states['COMPLETE'] + states['PRUNED'] == TRIALS and set(states) <= {'COMPLETE', 'PRUNED'}, states
    assert sorted(t.number for t in trials) == list(range(TRIALS))  # no number twice, none missing

    from mlflow.tracking import MlflowClient
    c = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    rs = c.search_runs([c.get_experiment_by_name('sweep_quadratic').experiment_id], max_results=1000)
    (parent,) = [r for r in rs if r.data.tags.get('mlopsnb.sweep') == 'parent']
    children = [r for r in rs if r is not parent]
    assert all(r.data.tags['mlflow.parentRunId'] == parent.info.run_id for r in children)
    per_trial = Counter(int(r.data.tags['mlopsnb.trial']) for r in children)
    assert per_trial == Counter(range(TRIALS)), per_trial  # exactly one child run per trial
    for t in trials:
        (run,) = [r for r in children if r.data.tags['mlopsnb.trial'] == str(t.number)]
        assert run.info.run_id == t.user_attrs['mlopsnb.run_id'] and run.data.tags['mlopsnb.trial_state'] == t.state.name
