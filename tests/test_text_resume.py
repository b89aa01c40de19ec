"""Exact resume for text: a fine-tuning run SIGKILLed mid-epoch and resumed from its checkpoints ends with bitwise the
same weights as an unbroken run (the length-bucketed `TextBatches` replay their epoch, dropout replays its RNG)."""
import os, subprocess, sys
from pathlib import Path
import pytest, torch

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, 'PYTHONPATH': str(HERE.parent), 'MLOPSNB_PROGRESS': 'none', 'OMP_NUM_THREADS': '1'}

def _run(out, *args):
    return subprocess.run([sys.executable, str(HERE / '_text_resume_train.py'), str(out), *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=300)

def test_text_sigkill_mid_epoch_resumes_bitwise(tmp_path):
    full, broken = tmp_path / 'full', tmp_path / 'broken'
    full.mkdir(); broken.mkdir()
    p = _run(full, 'full'); assert p.returncode == 0, p.stderr[-3000:]
    p = _run(broken, 'kill', 1, 7)  # mid-epoch 2, one batch after the every-3-batches checkpoint
    assert p.returncode == -9, f"expected SIGKILL (-9), got {p.returncode}: {p.stderr[-3000:]}"
    assert (broken / 'ck' / 'latest').exists()
    p = _run(broken, 'resume'); assert p.returncode == 0, p.stderr[-3000:]
    a, b = torch.load(full / 'final.pt'), torch.load(broken / 'final.pt')
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), f"parameter {k} differs after resume"
