"""The warm runner (`mlopsnb.daemon`) end to end: what a job sees is what a cold `mlopsnb run` gives it (environment,
folder, a fresh kernel), a replaced store is noticed, a vanished caller stops its job, parameter errors never start a
runner, and `mlopsnb daemon status|stop` manage it. The runner-mode cases of tests/test_jobs.py cover failing cells,
dead kernels, timeouts, Ctrl-C, grids and --reuse."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NBS = REPO / 'tests' / 'notebooks'
BIN = Path(sys.executable).parent


def nb(path, *cells):
    "Write a notebook: cells are sources; a tuple (src, tags) tags the cell"
    cs = []
    for c in cells:
        src, tags = c if isinstance(c, tuple) else (c, [])
        cs.append({'cell_type': 'code', 'execution_count': None, 'id': f'c{len(cs)}', 'metadata': {'tags': tags}, 'outputs': [], 'source': src})
    path.write_text(json.dumps({'cells': cs, 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}))
    return path


def runner_env(d):
    e = {k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')}
    e.update(MPLBACKEND='Agg', MLOPSNB_DAEMON='1', MLOPSNB_DAEMON_DIR=str(d))
    return e


@pytest.fixture
def env(tmp_path_factory):
    "A runner of this test's own (for tests that start, stop or kill it), in a short folder (socket paths are limited)"
    e = runner_env(tmp_path_factory.mktemp('r'))
    yield e
    subprocess.run([str(BIN / 'mlopsnb'), 'daemon', 'stop'], env=e, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture(scope='module')
def shared(tmp_path_factory):
    "One runner for the tests that only use it"
    e = runner_env(tmp_path_factory.mktemp('shared-runner'))
    yield e
    subprocess.run([str(BIN / 'mlopsnb'), 'daemon', 'stop'], env=e, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


def sleeping_job(cwd, env):
    "Start `mlopsnb run` on the sleep notebook and return the process once the notebook is in its long cell"
    p = subprocess.Popen([str(BIN / 'mlopsnb'), 'run', str(NBS / 'sleep.ipynb')], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    for line in p.stdout:
        if 'sleeping' in line or time.time() > deadline: break
    return p


def mlopsnb(cwd, env, *args, timeout=300):
    return subprocess.run([str(BIN / 'mlopsnb'), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def runs(uri, experiment):
    from mlflow.tracking import MlflowClient
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    return [] if exp is None else c.search_runs([exp.experiment_id], max_results=100)


def sock_dir(env):
    "Where the runner for `env` puts its socket (a short stand-in folder when MLOPSNB_DAEMON_DIR is a long path)"
    from mlopsnb.daemon import socket_path
    return socket_path(env).parent


def runner_pids(env):
    r = mlopsnb('/', env, 'daemon', 'status')
    return [int(l.split()[1]) for l in r.stdout.splitlines() if l.startswith('pid ')]


def test_a_job_on_the_runner_sees_what_a_cold_job_sees(tmp_path, shared):
    env = shared
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'helper_mod.py').write_text('VALUE = 41\n')
    probe = nb(tmp_path / 'probe.ipynb', ("tag: str = 'a'", ['parameters']),
               "import os, sys, json, mlflow\nimport helper_mod  # from the caller's folder\n"
               "print('PROBE', json.dumps({'cwd': os.getcwd(), 'var': os.environ.get('PROBE_VAR'), 'leak': os.environ.get('LEAK'),\n"
               "      'seen': globals().get('SEEN'), 'helper': helper_mod.VALUE, 'run': os.environ['MLOPSNB_RUN_ID'],\n"
               "      'active': mlflow.start_run().info.run_id, 'exe': sys.executable}))",
               "os.environ['LEAK'] = tag\nSEEN = tag")
    out = []
    for tag, var in (('one', 'x'), ('two', 'y')):
        r = mlopsnb(work, {**env, 'PROBE_VAR': var}, 'run', probe, '-p', 'tag', tag)
        assert r.returncode == 0, r.stdout + r.stderr
        out.append(json.loads(next(l for l in r.stdout.splitlines() if l.startswith('PROBE '))[len('PROBE '):]))
        out[-1]['stderr'] = r.stderr
    assert 'started a warm job runner' not in out[1]['stderr']  # the second job found the runner the first one started
    for o, var in zip(out, ('x', 'y')):
        assert o['cwd'] == str(work.resolve()) and o['var'] == var and o['helper'] == 41
        assert os.path.realpath(o['exe']) == os.path.realpath(sys.executable)
        assert o['leak'] is None and o['seen'] is None  # a fresh kernel per job: nothing of the previous job
        assert o['run'] == o['active']  # mlflow inside the notebook writes to the job's run
    assert len(runner_pids(env)) == 1
    (r1, r2) = sorted(runs(f"sqlite:///{work}/mlflow.db", 'probe'), key=lambda r: r.info.start_time)
    assert [r1.info.run_id, r2.info.run_id] == [out[0]['run'], out[1]['run']]
    assert r1.info.status == r2.info.status == 'FINISHED' and r2.data.params['tag'] == 'two'
    assert r2.data.tags['mlopsnb.notebook'] == str(probe) and (work / 'runs').is_dir()  # default output folder: the caller's


def test_a_replaced_store_is_noticed(tmp_path, shared):
    env = shared
    nb(tmp_path / 'm.ipynb', ("x: int = 1", ['parameters']), "import mlflow\nmlflow.log_metric('x', x)")
    assert mlopsnb(tmp_path, env, 'run', 'm.ipynb').returncode == 0
    (tmp_path / 'mlflow.db').unlink()  # starting over: the runner must not keep writing into the deleted file
    r = mlopsnb(tmp_path, env, 'run', 'm.ipynb', '-p', 'x', '2')
    assert r.returncode == 0, r.stderr
    (run,) = runs(f"sqlite:///{tmp_path}/mlflow.db", 'm')
    assert run.data.params['x'] == '2' and run.data.metrics == {'x': 2.0} and run.info.status == 'FINISHED'


def test_a_vanished_caller_stops_its_job(tmp_path, shared):
    p = sleeping_job(tmp_path, shared)
    try:
        p.kill()  # SIGKILL: the caller can't say anything; the runner sees its connection close
        p.wait(timeout=10)
    finally:
        if p.poll() is None: p.kill()
    deadline = time.time() + 30
    while time.time() < deadline:
        rs = runs(f"sqlite:///{tmp_path}/mlflow.db", 'sleep')
        if rs and rs[0].info.status != 'RUNNING': break
        time.sleep(0.5)
    (run,) = rs
    assert run.info.status == 'KILLED' and run.data.metrics == {'started': 1.0}


def test_parameter_errors_start_no_runner(tmp_path, env):
    r = mlopsnb(tmp_path, env, 'run', REPO / 'nbs' / 'jobs' / 'train_mnist.ipynb', '-p', 'lrr', '0.1')
    assert r.returncode == 2 and "did you mean 'lr'?" in r.stderr
    assert not list(sock_dir(env).glob('*.sock'))


def test_daemon_start_status_stop(tmp_path, env):
    r = mlopsnb(tmp_path, env, 'daemon')
    assert r.returncode == 0 and 'no warm runner is running' in r.stdout
    r = mlopsnb(tmp_path, env, 'daemon', 'start')
    assert r.returncode == 0 and r.stdout.startswith('started: pid'), r.stdout + r.stderr
    (pid,) = runner_pids(env)
    r = mlopsnb(tmp_path, env, 'daemon', 'start')
    assert r.stdout.startswith(f'already running: pid {pid}')
    assert 'current' in mlopsnb(tmp_path, env, 'daemon', 'status').stdout
    r = mlopsnb(tmp_path, env, 'daemon', 'stop')
    assert f'stopping pid {pid}' in r.stdout
    deadline = time.time() + 20
    while time.time() < deadline and Path(f'/proc/{pid}').exists(): time.sleep(0.2)
    assert not Path(f'/proc/{pid}').exists() or 'Z' in Path(f'/proc/{pid}/stat').read_text().split()[2]
    assert not list(sock_dir(env).glob('*.sock'))
    # a runner whose environment asks for no runner never starts: MLOPSNB_DAEMON=0 runs the job in the command itself
    nb(tmp_path / 'e.ipynb', 'pass')
    r = mlopsnb(tmp_path, {**env, 'MLOPSNB_DAEMON': '0'}, 'run', 'e.ipynb')
    assert r.returncode == 0 and 'warm job runner' not in r.stderr and runner_pids(env) == []


def test_sigterm_to_the_runner_ends_its_jobs_killed(tmp_path, env):
    p = sleeping_job(tmp_path, env)
    try:
        (pid,) = runner_pids(env)
        os.kill(pid, signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 130 and 'interrupted' in err, err
    (run,) = runs(f"sqlite:///{tmp_path}/mlflow.db", 'sleep')
    assert run.info.status == 'KILLED' and run.data.metrics == {'started': 1.0}
    deadline = time.time() + 30
    while time.time() < deadline and Path(f'/proc/{pid}').exists(): time.sleep(0.2)
    assert not Path(f'/proc/{pid}').exists() or 'Z' in Path(f'/proc/{pid}/stat').read_text().split()[2]
