"""`mlopsnb run/params/runs` end to end: parameter errors before any kernel, failing cells (raising, refused magics,
sys.exit), dead kernels, timeouts, Ctrl-C, grids on one sqlite store, --reuse, the interpreter pin, and a smoke run of the train_mnist job."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NBS = REPO / 'tests' / 'notebooks'
TRAIN = REPO / 'nbs' / 'jobs' / 'train_mnist.ipynb'
BIN = Path(sys.executable).parent


def default_sigint():
    "In the child: SIGINT back to its default, in case the test session was started with it ignored (`make test &`)"
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def env_for(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')}
    env.update({'MPLBACKEND': 'Agg', 'MLOPSNB_DAEMON': '0', **extra})
    return env


@pytest.fixture(scope='module')
def runner_dir(tmp_path_factory):
    "A private folder for this module's warm runner; the runner is stopped at the end"
    d = tmp_path_factory.mktemp('runner')
    yield d
    subprocess.run([str(BIN / 'mlopsnb'), 'daemon', 'stop'], env={**os.environ, 'MLOPSNB_DAEMON_DIR': str(d)}, timeout=60, stdin=subprocess.DEVNULL)


def _mode_env(mode, tmp_path, runner_dir):
    if mode == 'local': return env_for(tmp_path)
    return env_for(tmp_path, MLOPSNB_DAEMON='1', MLOPSNB_DAEMON_DIR=str(runner_dir))


@pytest.fixture(params=['local', 'runner'])
def mode_env(request, tmp_path, runner_dir):
    "The environment of `mlopsnb run`: jobs in the command's own process, or through the warm runner (mlopsnb.daemon)"
    return _mode_env(request.param, tmp_path, runner_dir)


@pytest.fixture(params=[pytest.param('local', marks=pytest.mark.slow), 'runner'])
def mode_env_r(request, tmp_path, runner_dir):
    "As `mode_env`, for longer tests whose code path is the same both ways: the local case runs with the slow tests"
    return _mode_env(request.param, tmp_path, runner_dir)


def mlopsnb(tmp_path, *args, timeout=300, env=None):
    t = time.time()
    r = subprocess.run([str(BIN / 'mlopsnb'), *map(str, args)], cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                       env=env or env_for(tmp_path), stdin=subprocess.DEVNULL)
    r.elapsed = time.time() - t
    return r


def client(tmp_path):
    from mlflow.tracking import MlflowClient
    return MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")


def runs_of(tmp_path, experiment):
    c = client(tmp_path)
    exp = c.get_experiment_by_name(experiment)
    return [] if exp is None else c.search_runs([exp.experiment_id], max_results=1000)


def test_param_errors_exit_2_before_any_kernel(tmp_path):
    r = mlopsnb(tmp_path, 'run', TRAIN, '-p', 'epochs', 'two')
    assert r.returncode == 2, r.stderr
    assert "parameter 'epochs' expects int, got 'two'" in r.stderr
    r = mlopsnb(tmp_path, 'run', TRAIN, '-p', 'lrr', '0.1')
    assert r.returncode == 2 and "did you mean 'lr'?" in r.stderr and 'valid parameters: epochs, lr, bs' in r.stderr
    r = mlopsnb(tmp_path, 'run', TRAIN, '--grid', 'precision=fp32,fp8')
    assert r.returncode == 2 and "one of ['auto', 'fp32', 'bf16', 'fp16']" in r.stderr  # the choices of train_mnist's Literal
    (tmp_path / 'p.yaml').write_text('bs: [1, 2]\n')
    r = mlopsnb(tmp_path, 'run', TRAIN, '-f', tmp_path / 'p.yaml')
    assert r.returncode == 2 and "'bs' expects int" in r.stderr
    r = mlopsnb(tmp_path, 'run', tmp_path / 'missing.ipynb')
    assert r.returncode == 2 and 'no such notebook' in r.stderr
    r = mlopsnb(tmp_path, 'run', TRAIN, '--tag', 'mlopsnb.retrain_of')
    assert r.returncode == 2 and "--tag 'mlopsnb.retrain_of': expected NAME=VALUE" in r.stderr
    r = mlopsnb(tmp_path, 'run', TRAIN, '--tag', '=abc')
    assert r.returncode == 2 and "--tag '=abc': the tag has no name" in r.stderr
    assert not (tmp_path / 'mlflow.db').exists() and not (tmp_path / 'runs').exists()  # nothing started


def test_params_command(tmp_path):
    r = mlopsnb(tmp_path, 'params', TRAIN, '--json')
    assert r.returncode == 0, r.stderr
    ps = {p['name']: p for p in json.loads(r.stdout)}
    assert list(ps) == ['epochs', 'lr', 'bs', 'shift', 'label_smoothing', 'arch', 'precision', 'seed', 'limit', 'analyze_data', 'export']
    assert ps['precision']['choices'] == ['auto', 'fp32', 'bf16', 'fp16'] and ps['epochs']['default'] == 8
    assert ps['label_smoothing']['type'] == 'float' and ps['shift']['default'] == 2
    r = mlopsnb(tmp_path, 'params', NBS / 'metrics.ipynb')
    assert r.returncode == 0 and 'steps' in r.stdout and 'metric steps to log' in r.stdout


def test_failing_cell(tmp_path, mode_env):
    r = mlopsnb(tmp_path, 'run', NBS / 'fail_cell3.ipynb', '--out', tmp_path / 'out', env=mode_env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'cell 3 raised ValueError: boom in cell 3 (x=2)' in r.stderr
    assert "line 2: raise ValueError(f'boom in cell 3 (x={x})')" in r.stderr
    (run,) = runs_of(tmp_path, 'fail_cell3')
    assert run.info.status == 'FAILED'
    assert run.data.metrics == {'m1': 1.0, 'm2': 2.0}  # logged before the failure, kept
    assert 'cell 3 raised ValueError' in run.data.tags['mlopsnb.error']
    for t in ('mlopsnb.git_sha', 'mlopsnb.git_dirty', 'mlopsnb.env_hash', 'mlopsnb.notebook', 'mlopsnb.notebook_sha'): assert t in run.data.tags
    nb = json.loads((tmp_path / 'out' / 'fail_cell3.ipynb').read_text())  # the partly executed notebook
    errs = [o for c in nb['cells'] for o in c.get('outputs', []) if o['output_type'] == 'error']
    assert errs and errs[0]['ename'] == 'ValueError'
    arts = {f.path for f in client(tmp_path).list_artifacts(run.info.run_id)}
    assert {'fail_cell3.ipynb', 'environment.json'} <= arts


def test_unknown_line_magic_fails_the_job(tmp_path, mode_env):
    # IPython prints a UsageError to stderr and replies with an error but sends no error output: still a failed cell
    r = mlopsnb(tmp_path, 'run', NBS / 'line_magic.ipynb', env=mode_env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'job FAILED: cell 0 raised UsageError: Line magic function `%undefined-line-magic` not found.' in r.stderr
    assert 'line 1: %undefined-line-magic' in r.stderr
    (run,) = runs_of(tmp_path, 'line_magic')
    assert run.info.status == 'FAILED' and run.data.metrics == {}  # the next cell did not run
    assert 'cell 0 raised UsageError' in run.data.tags['mlopsnb.error']


def test_unknown_cell_magic_fails_the_job(tmp_path):
    r = mlopsnb(tmp_path, 'run', NBS / 'cell_magic.ipynb')
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'cell 1 raised UsageError: Cell magic `%%undefined_cell_magic` not found.' in r.stderr
    (run,) = runs_of(tmp_path, 'cell_magic')
    assert run.info.status == 'FAILED' and run.data.metrics == {'before': 1.0}


@pytest.mark.parametrize('code,status', [(0, 'FINISHED'), (1, 'FAILED')])
def test_sys_exit_as_papermill_reads_it(tmp_path, code, status):
    # papermill's rule: SystemExit(0) ends the notebook successfully (later cells skipped), any other code is a failure
    r = mlopsnb(tmp_path, 'run', NBS / f'sysexit{code}.ipynb')
    assert r.returncode == code, r.stdout + r.stderr
    (run,) = runs_of(tmp_path, f'sysexit{code}')
    assert run.info.status == status and run.data.metrics == {'before': 1.0}
    if code: assert 'cell 1 raised SystemExit: 1' in r.stderr and 'SystemExit' in run.data.tags['mlopsnb.error']
    else: assert 'job FINISHED' in r.stdout and 'mlopsnb.error' not in run.data.tags


def test_dead_kernel_is_reported_within_seconds(tmp_path, mode_env):
    r = mlopsnb(tmp_path, 'run', NBS / 'os_exit.ipynb', timeout=120, env=mode_env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'the kernel died (exit code 1) while running cell 2: import os' in r.stderr
    (run,) = runs_of(tmp_path, 'os_exit')
    assert run.info.status == 'FAILED' and run.data.metrics == {'before_exit': 1.0}
    assert 'kernel died' in run.data.tags['mlopsnb.error']
    # the death is noticed by a 1 s liveness poll: the job takes no longer than a normal short job
    assert r.elapsed < 60, r.elapsed


def test_timeout_kills_the_kernel(tmp_path, mode_env_r):
    mode_env = mode_env_r
    limit = 25  # enough for the kernel to import mlflow and reach the sleeping cell on a loaded 2-core machine, cold or warm
    r = mlopsnb(tmp_path, 'run', NBS / 'sleep.ipynb', '--timeout', str(limit), env=mode_env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f'timed out after {limit} s (--timeout) while running cell 2: time.sleep(seconds)' in r.stderr
    assert r.elapsed < limit + 45
    (run,) = runs_of(tmp_path, 'sleep')
    assert run.info.status == 'FAILED' and run.data.metrics == {'started': 1.0}


def test_ctrl_c_marks_the_run_killed(tmp_path, mode_env):
    p = subprocess.Popen([str(BIN / 'mlopsnb'), 'run', str(NBS / 'sleep.ipynb')], cwd=tmp_path, env=mode_env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        deadline = time.time() + 120
        for line in p.stdout:  # the notebook prints 'sleeping' just before its long cell
            if 'sleeping' in line or time.time() > deadline: break
        t = time.time()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 130, err
    assert time.time() - t < 20
    assert 'interrupted' in err
    (run,) = runs_of(tmp_path, 'sleep')
    assert run.info.status == 'KILLED' and run.data.metrics == {'started': 1.0}
    kernel_pids = subprocess.run(['pgrep', '-f', 'ipykernel_launcher.*'], capture_output=True, text=True).stdout.split()
    # the kernel of this job is gone (its connection file lived in the runtime dir; check no process has our run's cwd)
    for pid in kernel_pids:
        try: assert Path(f'/proc/{pid}/cwd').resolve() != tmp_path.resolve()
        except (FileNotFoundError, PermissionError): pass


def test_grid_on_sqlite_loses_nothing(tmp_path, mode_env_r):
    mode_env = mode_env_r
    # 8 jobs, 4 at a time, each logging 60 metric steps into the same sqlite file
    r = mlopsnb(tmp_path, 'run', NBS / 'metrics.ipynb', '--grid', 'lr=0.1,0.2,0.3,0.4', '--grid', 'bs=16,32',
                '-p', 'steps', '60', '-j', '4', '--out', 'out', timeout=600, env=mode_env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '8/8 jobs finished' in r.stdout
    head = r.stdout.splitlines()[0]
    for col in ('lr', 'bs', 'status', 'score', 'time', 'run id'): assert col in head
    runs = runs_of(tmp_path, 'metrics')
    assert len(runs) == 8 and {x.info.status for x in runs} == {'FINISHED'}
    got = sorted((float(x.data.params['lr']), int(x.data.params['bs'])) for x in runs)
    assert got == sorted((lr, bs) for lr in (0.1, 0.2, 0.3, 0.4) for bs in (16, 32))
    c = client(tmp_path)
    for x in runs:
        assert x.data.metrics['score'] == pytest.approx(float(x.data.params['lr']) * int(x.data.params['bs']))
        assert len(c.get_metric_history(x.info.run_id, 'curve')) == 60
    assert len(list((tmp_path / 'out').glob('*/metrics.ipynb'))) == 8


def test_reuse_and_interpreter_pin_and_runs_json(tmp_path, mode_env_r):
    mode_env = mode_env_r
    # a user-level python3 kernelspec pointing at another interpreter must not be used
    ks = tmp_path / 'jupyter' / 'kernels' / 'python3'
    ks.mkdir(parents=True)
    (ks / 'kernel.json').write_text(json.dumps({'argv': ['/usr/bin/python3', '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
                                                'display_name': 'wrong python', 'language': 'python'}))
    env = {**mode_env, 'JUPYTER_PATH': str(tmp_path / 'jupyter'), 'JUPYTER_DATA_DIR': str(tmp_path / 'jupyter')}
    args = ('run', NBS / 'metrics.ipynb', '-p', 'lr', '0.5', '--reuse', '--tag', 'mlopsnb.retrain_of=abc', '--tag', 'note=a=b')
    r1 = mlopsnb(tmp_path, *args, env=env)
    assert r1.returncode == 0, r1.stderr
    assert 'score 32.0' in r1.stdout
    r2 = mlopsnb(tmp_path, *args, env=env)
    assert r2.returncode == 0, r2.stderr
    assert 'reused run' in r2.stdout and 'score 32.0' not in r2.stdout  # nothing executed
    (run,) = runs_of(tmp_path, 'metrics')
    assert os.path.realpath(run.data.tags['mlopsnb.kernel_executable']) == os.path.realpath(sys.executable)
    assert (run.data.tags['mlopsnb.retrain_of'], run.data.tags['note']) == ('abc', 'a=b')  # --tag, through the warm runner too
    assert run.info.run_id in r2.stdout
    r3 = mlopsnb(tmp_path, 'run', NBS / 'metrics.ipynb', '-p', 'lr', '0.25', '--reuse', env=env)  # other params: executes
    assert r3.returncode == 0 and 'score 16.0' in r3.stdout
    r = mlopsnb(tmp_path, 'runs', '--json', '--experiment', 'metrics')
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert len(listed) == 2 and run.info.run_id in {x['run_id'] for x in listed}
    assert all(x['status'] == 'FINISHED' and x['tags']['mlopsnb.notebook'].endswith('metrics.ipynb') for x in listed)
    r = mlopsnb(tmp_path, 'runs')
    assert r.returncode == 0 and run.info.run_id in r.stdout


def test_folder_of_notebooks_as_tests(tmp_path):
    # what `make test` does: every notebook of a folder with its `# smoke:` parameters, 2 at a time; train_mnist is one
    folder = tmp_path / 'nbs'
    folder.mkdir()
    (folder / 'train_mnist.ipynb').write_bytes(TRAIN.read_bytes())
    (folder / 'fail_cell3.ipynb').write_bytes((NBS / 'fail_cell3.ipynb').read_bytes())
    r = mlopsnb(tmp_path, 'run', folder, '-j', '2', '--out', tmp_path / 'out', timeout=600, env=env_for(tmp_path, MLOPSNB_SMOKE='1'))
    assert r.returncode == 1, r.stdout + r.stderr  # one notebook fails, after both ran
    assert '1/2 jobs finished, 1 failed' in r.stdout and 'notebook' in r.stdout.splitlines()[0]
    assert 'job 0 (fail_cell3.ipynb defaults) FAILED: cell 3 raised ValueError' in r.stderr
    (run,) = runs_of(tmp_path, 'train_mnist')
    assert run.info.status == 'FINISHED'
    assert run.data.params['limit'] == '400' and run.data.params['epochs'] == '1'  # the smoke parameters
    assert 'final_valid_accuracy' in run.data.metrics and 'mlopsnb.data_fingerprint' in run.data.tags
    (executed,) = (tmp_path / 'out').glob('001-train_mnist-epochs=1,limit=400*/train_mnist.ipynb')
    assert 'valid accuracy:' in executed.read_text()
    r = mlopsnb(tmp_path, 'run', folder, '-p', 'epochs', '1')
    assert r.returncode == 2 and 'take no -p' in r.stderr


@pytest.mark.slow
def test_grid_8_parallel_on_sqlite(tmp_path, mode_env):
    r = mlopsnb(tmp_path, 'run', NBS / 'metrics.ipynb', '--grid', 'lr=0.1,0.2,0.3,0.4', '--grid', 'arch=a,b',
                '-p', 'steps', '200', '-j', '8', timeout=900, env=mode_env)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = runs_of(tmp_path, 'metrics')
    assert len(runs) == 8 and {x.info.status for x in runs} == {'FINISHED'}
    c = client(tmp_path)
    assert all(len(c.get_metric_history(x.info.run_id, 'curve')) == 200 for x in runs)


@pytest.mark.slow
def test_train_mnist_defaults_reach_097(tmp_path):
    r = mlopsnb(tmp_path, 'run', TRAIN, '--out', tmp_path / 'out', timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = runs_of(tmp_path, 'train_mnist')
    assert run.data.metrics['final_valid_accuracy'] >= 0.97
    assert 'model bundle:' in r.stdout and (tmp_path / 'out' / 'bundle' / 'bundle.json').exists()
    assert (tmp_path / 'out' / 'analysis').is_dir() and (tmp_path / 'out' / 'splits').is_dir()
    arts = {f.path for f in client(tmp_path).list_artifacts(run.info.run_id)}
    assert {'train_mnist.ipynb', 'environment.json', 'bundle', 'analysis', 'splits'} <= arts


def test_a_plain_fastai_learner_prints_progress_lines(tmp_path):
    # fastai's default ProgressCallback draws HTML bars nobody sees in a job; the kernel swaps it for plain lines
    r = mlopsnb(tmp_path, 'run', NBS / 'fastai_plain.ipynb', timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'progress callback: FastaiPlainProgress' in r.stdout
    import re
    assert re.search(r'^epoch\s+train_loss\s+valid_loss', r.stdout, re.M) and re.search(r'^1\s+[\d.]+\s+[\d.]+', r.stdout, re.M), r.stdout
    (executed,) = (tmp_path / 'runs').glob('fastai_plain-*/fastai_plain.ipynb')
    assert 'text/html' not in executed.read_text()
