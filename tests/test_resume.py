"""Exact resume: a run SIGKILLed mid-epoch and resumed from its checkpoints ends with bitwise the same weights as an
unbroken run; a crash while a checkpoint is being written leaves `latest` loadable."""
import importlib.util, os, random, subprocess, sys
from pathlib import Path

import pytest, torch

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / '_resume_train.py'
ENV = {**os.environ, 'PYTHONPATH': str(HERE.parent), 'MLOPSNB_PROGRESS': 'none', 'OMP_NUM_THREADS': '1'}

def _run(out, *args, check=True):
    p = subprocess.run([sys.executable, str(SCRIPT), str(out), *map(str, args)], env=ENV, capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0: raise AssertionError(f"{args} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return p

def _in_process(out, mode):
    "Run the helper's 'full' or 'resume' fit here (one thread, like the subprocesses): only the dying runs need a process"
    spec = importlib.util.spec_from_file_location('_resume_train', SCRIPT)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try: return mod.run(out, mode)
    finally: torch.set_num_threads(threads)

@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "Final weights of the unbroken 3-epoch fit_one_cycle"
    return _in_process(tmp_path_factory.mktemp('full'), 'full')

def _kill_and_resume(tmp_path, reference, it):
    p = _run(tmp_path, 'kill', 1, it, check=False)
    assert p.returncode == -9, f"expected SIGKILL (-9), got {p.returncode}: {p.stderr[-2000:]}"
    assert (tmp_path / 'ck' / 'latest').exists()
    final = _in_process(tmp_path, 'resume')
    assert final.keys() == reference.keys()
    for k in reference: assert torch.equal(final[k], reference[k]), f"parameter {k} differs after resume (kill at epoch 1, iter {it})"

def test_sigkill_mid_epoch_resumes_bitwise(tmp_path, reference):
    _kill_and_resume(tmp_path, reference, 13)  # mid-epoch 2, between two every-5-iteration checkpoints

@pytest.mark.slow
@pytest.mark.parametrize('seed', range(5))
def test_sigkill_random_points_resume_bitwise(tmp_path, reference, seed):
    _kill_and_resume(tmp_path, reference, random.Random(seed).randrange(0, 22))  # 22 batches per epoch

def test_crash_while_writing_checkpoint_keeps_latest_loadable(tmp_path, reference):
    from mlopsnb.callbacks import load_checkpoint, latest_checkpoint
    p = _run(tmp_path, 'crash-in-save', check=False)
    assert p.returncode == -9, f"expected SIGKILL (-9), got {p.returncode}: {p.stderr[-2000:]}"
    ck = tmp_path / 'ck'
    assert latest_checkpoint(ck).name == 'epoch001-iter000000.pt'  # the previous, complete one
    assert not (ck / 'epoch002-iter000000.pt').exists()            # the half-written one never got its name
    assert list(ck.glob('.epoch002-iter000000.pt.*.tmp'))            # ... it died as a temp file
    st = load_checkpoint(ck)
    assert (st['epoch'], st['iter']) == (1, 0)
    final = _in_process(tmp_path, 'resume')  # and training goes on from it to the same end
    for k in reference: assert torch.equal(final[k], reference[k]), k


def _load_helper():
    spec = importlib.util.spec_from_file_location('_resume_train', SCRIPT)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_resumed_job_continues_its_fit_by_itself(tmp_path, monkeypatch):
    """A job (simulated by its environment) trains 2 of 4 epochs; the same code with MLOPSNB_RESUME=1 ends bitwise where an
    uninterrupted 4-epoch fit ends, in the same run, its metrics appended after the last flushed step; a plain re-run
    of the job in another folder leaves the first job's checkpoints alone."""
    import mlflow
    mod = _load_helper()
    for v in ('MLOPSNB_RUN_ID', 'MLFLOW_RUN_ID', 'MLOPSNB_RESUME', 'MLOPSNB_JOB', 'MLOPSNB_JOB_OUT'): monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv('MLFLOW_TRACKING_URI', f'sqlite:///{tmp_path}/mlflow.db')
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(os.environ['MLFLOW_TRACKING_URI'])
    client = mlflow.MlflowClient()
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        eid = client.create_experiment('jobs')
        monkeypatch.setenv('MLFLOW_EXPERIMENT_ID', eid)  # as a job runner sets it
        ref = mod.build_job(); ref.fit_one_cycle(4, mod.LR)  # outside any job: no checkpoints, its own run
        assert not (tmp_path / 'checkpoints').exists()
        job = client.create_run(eid).info.run_id
        job_dir = tmp_path / 'job1'
        monkeypatch.setenv('MLOPSNB_JOB', '1'); monkeypatch.setenv('MLOPSNB_JOB_OUT', str(job_dir)); monkeypatch.setenv('MLOPSNB_RUN_ID', job)
        first = mod.build_job(stop_after=2); first.fit_one_cycle(4, mod.LR)
        assert sorted(p.name for p in (job_dir / 'checkpoints').glob('epoch*.pt')) == ['epoch001-iter000000.pt', 'epoch002-iter000000.pt']
        assert [m.step for m in client.get_metric_history(job, 'valid_loss')] == [0, 1]
        monkeypatch.setenv('MLOPSNB_RESUME', '1')
        again = mod.build_job(); again.fit_one_cycle(4, mod.LR)  # the unchanged notebook, resumed
        assert again.mlops.resumed_from == job_dir / 'checkpoints' / 'epoch002-iter000000.pt'
        for (k, a), b in zip(ref.model.state_dict().items(), again.model.state_dict().values()): assert torch.equal(a, b), k
        hist = client.get_metric_history(job, 'valid_loss')
        assert [m.step for m in hist] == [0, 1, 2, 3]  # appended, each epoch once
        assert [m.value for m in hist] == [float(v[1]) for v in ref.recorder.values]
        # a plain re-run of the job notebook (a new job, its own folder) keeps the first job's checkpoints
        monkeypatch.delenv('MLOPSNB_RESUME'); monkeypatch.setenv('MLOPSNB_JOB_OUT', str(tmp_path / 'job2'))
        monkeypatch.setenv('MLOPSNB_RUN_ID', client.create_run(client.get_experiment_by_name('jobs').experiment_id).info.run_id)
        before = sorted(p.name for p in (job_dir / 'checkpoints').iterdir())
        mod.build_job(stop_after=1).fit_one_cycle(4, mod.LR)
        assert sorted(p.name for p in (job_dir / 'checkpoints').iterdir()) == before
        assert (tmp_path / 'job2' / 'checkpoints' / 'latest').exists()
    finally: torch.set_num_threads(threads)
