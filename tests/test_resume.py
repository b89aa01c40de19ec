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
