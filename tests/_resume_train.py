"""Helper for tests/test_resume.py: train a tiny digits MLP with mlops_learner and checkpoints, optionally dying.
Usage: python _resume_train.py OUT_DIR MODE [EPOCH ITER]
MODE: 'full' (train, save final weights), 'kill' (SIGKILL itself after batch ITER of EPOCH),
'resume' (resume from OUT_DIR/ck, save final weights), 'crash-in-save' (SIGKILL half-way through writing
the second checkpoint file)."""
import os, signal, sys
from pathlib import Path

import torch, torch.nn as nn

EPOCHS, LR, EVERY_ITERS = 3, 3e-3, 5

def build(out:Path):
    from fastai.callback.core import Callback
    from mlopsnb.callbacks import mlops_learner
    from mlopsnb.datasets import digits, stratified_split
    from mlopsnb.loaders import tensor_dls, NormalizeImages
    d = digits()
    trn, val = stratified_split(d.y, valid_pct=0.2, seed=0)
    dls = tensor_dls(torch.from_numpy(d.x[trn]), torch.from_numpy(d.y[trn]), torch.from_numpy(d.x[val]), torch.from_numpy(d.y[val]),
                     bs=64, seed=1, device='cpu', tfms=[NormalizeImages(0.3, 0.3, scale=16.)])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10))  # dropout: the torch RNG matters
    return Callback, mlops_learner(dls, model, nn.CrossEntropyLoss(), lr=LR, tracking=False, progress='none',
                                   checkpoint_dir=Path(out) / 'ck', checkpoint_every_iters=EVERY_ITERS)

def build_job(stop_after:int|None=None):
    "The learner a job notebook builds: mlops_learner's defaults (in a job: checkpoints in the job's folder, tracking to the job's run)"
    from fastai.callback.core import Callback, CancelFitException
    from mlopsnb.callbacks import mlops_learner
    _, learn = build(Path('.'))  # same data and model as `build`
    class StopAfter(Callback):  # a first attempt that ends after `stop_after` epochs, as a kill at an epoch boundary
        order = 90
        def after_epoch(self):
            if stop_after is not None and self.epoch + 1 == stop_after: raise CancelFitException
    learn = mlops_learner(learn.dls, learn.model, nn.CrossEntropyLoss(), lr=LR, progress='none', cbs=[StopAfter()])
    learn.logger = lambda *a, **k: None
    return learn

def run(out:Path, mode:str) -> dict:
    "Run a 'full' or 'resume' fit in this process; return the final weights"
    _, learn = build(out)
    learn.logger = lambda *a, **k: None
    if mode == 'full': learn.fit_one_cycle(EPOCHS, LR)
    else: learn.resume(Path(out) / 'ck')
    return {k: v.clone() for k, v in learn.model.state_dict().items()}

def save_final(learn): torch.save(learn.model.state_dict(), OUT / 'final.pt')

if __name__ == '__main__':
    torch.set_num_threads(1)
    OUT, mode = Path(sys.argv[1]), sys.argv[2]
    Callback, learn = build(OUT)
    learn.logger = lambda *a, **k: None
    if mode == 'full':
        learn.fit_one_cycle(EPOCHS, LR); save_final(learn)
    elif mode == 'kill':
        at = (int(sys.argv[3]), int(sys.argv[4]))
        class Kill(Callback):
            order = 1000
            def after_batch(self):
                if self.learn.training and (self.epoch, self.iter) == at: os.kill(os.getpid(), signal.SIGKILL)
        learn.add_cb(Kill())
        learn.fit_one_cycle(EPOCHS, LR)
        raise SystemExit('the kill point was never reached')
    elif mode == 'resume':
        learn.resume(OUT / 'ck'); save_final(learn)
    elif mode == 'crash-in-save':
        from mlopsnb.core import atomic_writer
        ck, n = learn.cbs.filter(lambda c: type(c).__name__ == 'CheckpointCallback')[0], [0]
        ck.every_iters = None
        def crashing_write(path, data):
            if path.name.startswith('epoch'): n[0] += 1
            if n[0] == 2 and path.name.startswith('epoch'):
                with atomic_writer(path) as f:
                    f.write(data[:len(data) // 2]); f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            atomic_writer_write(path, data)
        from mlopsnb.core import atomic_write as atomic_writer_write
        ck._write = crashing_write
        learn.fit_one_cycle(EPOCHS, LR)
        raise SystemExit('never crashed')
    else: raise SystemExit(f'unknown mode {mode!r}')
