"""Preemptible jobs and no zombie runs: SIGKILL of `mlopsnb run` (in its own process, and of the warm runner) ends
the run KILLED at the next `mlopsnb runs` and leaves no kernel; a job whose kernel is SIGKILLed mid-training continues
in the same run with `--resume` (or `--retries`) to final weights bitwise-equal to an uninterrupted job."""
import json, os, random, signal, subprocess, sys, time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NBS = REPO / 'tests' / 'notebooks'
BIN = Path(sys.executable).parent


def env_for(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')}
    env.update({'MPLBACKEND': 'Agg', 'MLOPSNB_DAEMON': '0', 'MLOPSNB_HEARTBEAT_S': '1', **extra})
    return env


@pytest.fixture(scope='module')
def runner_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('runner')
    yield d
    subprocess.run([str(BIN / 'mlopsnb'), 'daemon', 'stop'], env={**os.environ, 'MLOPSNB_DAEMON_DIR': str(d)}, timeout=60, stdin=subprocess.DEVNULL)


def mlopsnb(cwd, env, *args, timeout=300):
    return subprocess.run([str(BIN / 'mlopsnb'), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def start(cwd, env, *args):
    return subprocess.Popen([str(BIN / 'mlopsnb'), *map(str, args)], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(p, text, timeout=120):
    deadline = time.time() + timeout
    for line in p.stdout:
        if text in line: return line
        if time.time() > deadline: break
    raise AssertionError(f"{text!r} never printed; stderr: {p.stderr.read() if p.poll() is not None else '(running)'}")


def client(tmp_path):
    from mlflow.tracking import MlflowClient
    return MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")


def only_run(tmp_path, experiment):
    c = client(tmp_path)
    (run,) = c.search_runs([c.get_experiment_by_name(experiment).experiment_id])
    return run


def alive(pid:int) -> bool:
    try: return b'ipykernel' in Path(f'/proc/{pid}/cmdline').read_bytes()
    except OSError: return False


@pytest.mark.parametrize('mode', ['local', 'runner'])
def test_sigkill_of_the_runner_leaves_no_zombie_run(tmp_path, mode, runner_dir):
    env = env_for(tmp_path) if mode == 'local' else env_for(tmp_path, MLOPSNB_DAEMON='1', MLOPSNB_DAEMON_DIR=str(runner_dir))
    p = start(tmp_path, env, 'run', NBS / 'sleep.ipynb')
    try:
        wait_for_line(p, 'sleeping')
        run = only_run(tmp_path, 'sleep')
        assert run.info.status == 'RUNNING'
        tags = run.data.tags
        kernel, runner = int(tags['mlopsnb.kernel_pid']), int(tags['mlopsnb.runner_pid'])
        assert runner == p.pid if mode == 'local' else runner != p.pid  # the runner process is the one that dies
        os.kill(runner, signal.SIGKILL)
        t = time.time()
        p.wait(timeout=30)
    finally:
        if p.poll() is None: p.kill()
    while alive(kernel) and time.time() - t < 10: time.sleep(0.2)
    assert not alive(kernel), 'the kernel outlived the process running its job'
    gone_after = time.time() - t
    time.sleep(max(0.0, 3.5 - (time.time() - t)))  # three heartbeats of 1 s missed
    r = mlopsnb(tmp_path, env_for(tmp_path), 'runs', '--json')
    assert r.returncode == 0, r.stderr
    (listed,) = json.loads(r.stdout)
    assert listed['status'] == 'KILLED', listed
    assert listed['tags']['mlopsnb.error'].startswith('no heartbeat since') and 'the process running the job died' in listed['tags']['mlopsnb.error']
    assert listed['metrics'] == {'started': 1.0}
    print(f"{mode}: kernel gone {gone_after:.1f} s after SIGKILL of the runner")


def test_a_live_job_is_not_swept(tmp_path):
    env = env_for(tmp_path)
    p = start(tmp_path, env, 'run', NBS / 'sleep.ipynb', '-p', 'seconds', '12')
    try:
        wait_for_line(p, 'sleeping')
        time.sleep(4)  # > 3 heartbeat intervals since the run began: only the beats keep it alive
        r = mlopsnb(tmp_path, env, 'runs', '--json')
        assert [x['status'] for x in json.loads(r.stdout)] == ['RUNNING']
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None: p.kill()
    assert only_run(tmp_path, 'sleep').info.status == 'FINISHED'


def _kill_mid_training(cwd, env, *extra):
    "Start the preempt job, SIGKILL its kernel at a random moment after epoch 1; the finished process"
    p = start(cwd, env, 'run', NBS / 'preempt.ipynb', *extra)
    try:
        wait_for_line(p, 'epoch 1 done')
        time.sleep(random.uniform(0.0, 0.6))
        c = client(cwd)
        (run,) = [r for r in c.search_runs([c.get_experiment_by_name('preempt').experiment_id]) if r.info.status == 'RUNNING']
        os.kill(int(run.data.tags['mlopsnb.kernel_pid']), signal.SIGKILL)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None: p.kill()
    return p, run.info.run_id, out, err


def _weights(folder):
    import torch
    return torch.load(Path(folder) / 'final.pt', weights_only=True)


def _equal(a, b):
    import torch
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _trained(out:str) -> int:
    return int(next(l for l in out.splitlines() if l.startswith('trained_batches')).split()[1])


@pytest.mark.slow  # ~100 s; the default suite keeps test_retries_resume_the_same_run_after_a_dead_kernel, tests/test_resume.py kills at random points
def test_resume_after_a_kill_is_the_same_run_and_bitwise_equal(tmp_path):
    ref_dir, work = tmp_path / 'ref', tmp_path / 'work'
    ref_dir.mkdir(); work.mkdir()
    env = env_for(tmp_path)
    ref = mlopsnb(ref_dir, env, 'run', NBS / 'preempt.ipynb')
    assert ref.returncode == 0, ref.stderr
    full = _trained(ref.stdout)
    ref_w = _weights(only_run(ref_dir, 'preempt').data.tags['mlopsnb.output'])

    p, run_id, out, err = _kill_mid_training(work, env)
    assert p.returncode == 1 and 'the kernel died' in err, err
    c = client(work)
    killed = c.get_run(run_id)
    folder = Path(killed.data.tags['mlopsnb.output'])
    ckpts = {f: f.stat().st_mtime_ns for f in (folder / 'checkpoints').rglob('*') if f.is_file()}
    assert ckpts, f"no checkpoints in {folder / 'checkpoints'}: the training side does not checkpoint into job_context().checkpoint_dir"

    plain = mlopsnb(work, env, 'run', NBS / 'preempt.ipynb')  # a plain re-run: a new run, in its own folder
    assert plain.returncode == 0, plain.stderr
    assert {f: f.stat().st_mtime_ns for f in (folder / 'checkpoints').rglob('*') if f.is_file()} == ckpts  # left intact

    t = time.time()
    res = mlopsnb(work, env, 'run', NBS / 'preempt.ipynb', '--resume')
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"run {run_id}" in res.stdout and 'attempt 2: resumed' in res.stdout, res.stdout
    run = c.get_run(run_id)
    assert run.info.status == 'FINISHED' and run.data.tags['mlopsnb.attempt'] == '2'
    assert 'the kernel died' in run.data.tags['mlopsnb.error.attempt1'] and 'mlopsnb.error' not in run.data.tags
    assert (folder / 'preempt.ipynb').exists() and (folder / 'preempt.attempt2.ipynb').exists()
    assert _equal(_weights(folder), ref_w), 'the resumed job ended with other weights than the uninterrupted one'
    resumed = _trained(res.stdout)
    assert resumed < full, f"the resumed attempt trained {resumed} batches of {full}: it started over"
    steps = [m.step for m in c.get_metric_history(run_id, 'train_loss')]
    assert steps == sorted(set(steps)) and len(steps) == 6, steps  # one point per epoch, none twice
    print(f"resume: {resumed}/{full} batches retrained, {time.time() - t:.1f} s")


def test_resume_errors_are_usage_errors(tmp_path):
    env = env_for(tmp_path)
    r = mlopsnb(tmp_path, env, 'run', NBS / 'sleep.ipynb', '--resume')
    assert r.returncode == 2 and 'no KILLED or FAILED run of' in r.stderr, r.stderr
    ok = mlopsnb(tmp_path, env, 'run', NBS / 'metrics.ipynb', '-p', 'steps', '1')
    assert ok.returncode == 0, ok.stderr
    rid = only_run(tmp_path, 'metrics').info.run_id
    r = mlopsnb(tmp_path, env, 'run', NBS / 'sleep.ipynb', '--resume', rid)
    assert r.returncode == 2 and f'run {rid} is a run of' in r.stderr and 'not of' in r.stderr, r.stderr
    r = mlopsnb(tmp_path, env, 'run', NBS / 'metrics.ipynb', '-p', 'steps', '1', '--resume', rid)
    assert r.returncode == 2 and 'is FINISHED: only a KILLED or FAILED run can be resumed' in r.stderr, r.stderr
    assert not (tmp_path / 'runs' / 'sleep').exists()


def test_retries_resume_the_same_run_after_a_dead_kernel(tmp_path):
    env = env_for(tmp_path)
    r = mlopsnb(tmp_path, env, 'run', NBS / 'os_exit.ipynb', '--retries', '1')
    assert r.returncode == 1
    assert 'resuming run' in r.stderr and '(attempt 2)' in r.stderr, r.stderr
    run = only_run(tmp_path, 'os_exit')  # one run for both attempts
    assert run.data.tags['mlopsnb.attempt'] == '2' and run.info.status == 'FAILED'
    folder = Path(run.data.tags['mlopsnb.output'])
    assert (folder / 'os_exit.ipynb').exists() and (folder / 'os_exit.attempt2.ipynb').exists()
    r = mlopsnb(tmp_path, env, 'run', NBS / 'fail_cell3.ipynb', '--retries', '2')  # an exception in a cell: no retry
    assert r.returncode == 1 and 'resuming' not in r.stderr
    assert only_run(tmp_path, 'fail_cell3').data.tags['mlopsnb.attempt'] == '1'


@pytest.mark.slow
def test_retries_continue_a_killed_training_by_themselves(tmp_path):
    ref_dir, work = tmp_path / 'ref', tmp_path / 'work'
    ref_dir.mkdir(); work.mkdir()
    env = env_for(tmp_path)
    assert mlopsnb(ref_dir, env, 'run', NBS / 'preempt.ipynb').returncode == 0
    ref_w = _weights(only_run(ref_dir, 'preempt').data.tags['mlopsnb.output'])
    p, run_id, out, err = _kill_mid_training(work, env, '--retries', '1')
    assert p.returncode == 0, out + err
    assert f'resuming run {run_id} (attempt 2)' in err and 'attempt 2: resumed' in out, err
    run = only_run(work, 'preempt')  # one run
    assert run.info.run_id == run_id and run.info.status == 'FINISHED' and run.data.tags['mlopsnb.attempt'] == '2'
    assert _equal(_weights(run.data.tags['mlopsnb.output']), ref_w)
