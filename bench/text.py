"""Text models on CPU: fine-tuning all-MiniLM-L6-v2 on Rotten Tomatoes through mlopsnb vs a plain PyTorch loop, the
frozen-encoder baseline, and inference of torch eager vs the fp32 and int8 bundles. Everything in one process, on one split.

Data: `mlopsnb.datasets.rotten_tomatoes()` (snippets labelled rotten/fresh; train/valid/test split by movie).
Model: `text_learner(text_dls(...))`: the default all-MiniLM-L6-v2 encoder, mean pooling, a linear head; AdamW (wd 0.01),
`fit_one_cycle(epochs, lr)` (or `slice(lr / lr_mult, lr)` with `--lr-mult`), bs 32, max_length 128.

1. Loop parity (tokens/s), the loop_parity method: the same model init (`torch.manual_seed` before building each
   `TextClassifier` around a copy of one loaded encoder), the same batches (a fresh `text_dls` with the same seed: the
   same `TextBatches` plan), the same seed before the fit (dropout masks), the same AdamW, param groups and weight decay,
   and fastai's one-cycle schedule (cosine lr warm-up over pct_start=0.25 from lr/25 to lr, then down to lr/1e5;
   AdamW's beta1 following moms (0.95, 0.85, 0.95)) written out by hand in the plain loop, with fastai's own arithmetic.
   Contenders, alternating (a, c0, c, then c, c0, a, ...), `--parity-repeats` times, each one epoch of exactly
   `--parity-steps` training batches plus a validation pass over `--parity-valid` texts:
     (a)  a plain PyTorch loop over `dls.train`;
     (c0) mlopsnb's `text_learner` without I/O (tracking=False, checkpoint_dir=False);
     (c)  mlopsnb's `text_learner` with its defaults: MLflow tracking to a throwaway sqlite store, checkpoints to a
          temp folder (time-based, every 60 s, and at the end), plain progress (stdout swallowed).
   Timed: the epoch (training + validation + the epoch's callbacks), the training phase alone, and the whole fit call.
   Tokens: real (non-padding) and padded tokens of the epoch's training batches, counted from the same plan
   beforehand. Reports tokens/s and the ratio to (a); checks the final weights (max abs difference) and the
   validation loss/accuracy of (a) against (c0) and (c).
2. Accuracy: one full fine-tune through mlopsnb (defaults: tracking + checkpoints in temp folders) on the whole
   training split, its training wall time and epoch times, then accuracy on the held-out test split (torch eager);
   the frozen baseline (`frozen_baseline`: logistic regression on the untouched encoder's embeddings) beside it.
3. Inference: the fine-tuned learner exported with `export_bundle(learn, ..., int8=True)` (dynamic int8). Contenders
   on raw strings from the test split, batch 1 and batch 32, alternating round by round after a warm-up:
   torch eager (`model.eval()`, `inference_mode`, tokenized with the same tokenizer and padding as the bundle,
   argmax to class names), the fp32 bundle's `predict` and the int8 bundle's `predict`; tokenization alone for
   reference. p50/p99 ms and texts/s. Test accuracy of all three; the int8 accuracy loss in points.

Threads: `torch.set_num_threads(--threads)` (default 2) and onnxruntime sessions with the same intra-op thread count
(`load_bundle(threads=...)`, idle threads not spinning).
Goals (checked here, not in tests): test accuracy >= 0.85 after <= 15 min of training on 2 cores; (c) >= 0.95x the
plain loop's tokens/s; the int8 bundle >= 1.7x faster than fp32 at batch 32 (p50) with <= 1 point accuracy loss.

Usage: python bench/text.py [--epochs 3] [--lr 1e-4] [--lr-mult 1] [--bs 32] [--threads 2] [--parity-steps 60]
                            [--parity-repeats 2] [--rounds 10] [--skip-parity] [--quick]
--quick: 512 training texts, 256 validation/test texts, 1 epoch, 6 parity steps x 1 repeat, 3 inference rounds (a
smoke check, ~2-3 min; its accuracy figures mean nothing). Writes bench/results/text.json and text.md."""
from __future__ import annotations
import argparse, contextlib, copy, io, json, math, os, platform, statistics, sys, tempfile, time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / 'bench' / 'results'

p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--epochs', type=int, default=3)
p.add_argument('--lr', type=float, default=1e-4)
p.add_argument('--lr-mult', type=float, default=1.0, help="discriminative lrs slice(lr / lr_mult, lr) over the 3 groups (1: one lr)")
p.add_argument('--bs', type=int, default=32)
p.add_argument('--max-length', type=int, default=128)
p.add_argument('--threads', type=int, default=2, help='torch intra-op threads and onnxruntime intra-op threads')
p.add_argument('--parity-steps', type=int, default=60, help='training batches per parity epoch')
p.add_argument('--parity-valid', type=int, default=512, help='validation texts per parity epoch')
p.add_argument('--parity-repeats', type=int, default=2)
p.add_argument('--rounds', type=int, default=10, help='inference rounds (each: 40 calls at batch 1, 10 at batch 32, per contender)')
p.add_argument('--skip-parity', action='store_true')
p.add_argument('--parity-only', action='store_true', help='only the loop-parity part: print its rows (every repeat) and stop')
p.add_argument('--quick', action='store_true', help='small subsets, 1 epoch, few repeats: a smoke check')
args = p.parse_args()
if args.quick:
    args.epochs, args.parity_steps, args.parity_repeats, args.parity_valid, args.rounds = 1, 6, 1, 128, 3
N_TRAIN, N_EVAL = (512, 256) if args.quick else (None, None)
SEED, WD, DIV, DIV_FINAL, PCT_START, MOMS = 0, 0.01, 25., 1e5, 0.25, (0.95, 0.85, 0.95)

import torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(args.threads)

_STORE = Path(tempfile.mkdtemp(prefix='bench_text_'))


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def load() -> float: return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------- data

def data():
    "train/valid/test (texts, labels) from rotten_tomatoes, subsets under --quick"
    from mlopsnb.datasets import rotten_tomatoes
    df = rotten_tomatoes()
    out = {}
    for s in ('train', 'valid', 'test'):
        d = df[df.split == s]
        n = N_TRAIN if s == 'train' else N_EVAL
        if n: d = d.sample(n=min(n, len(d)), random_state=0)
        out[s] = (d.text.tolist(), d.label.astype(str).tolist())
    return out


def subset(texts, labels, n, seed=0):
    idx = np.random.default_rng(seed).permutation(len(texts))[:n]
    return [texts[i] for i in idx], [labels[i] for i in idx]


def make_dls(trn, val):
    from mlopsnb.text import text_dls
    return text_dls(trn[0], trn[1], val[0], val[1], max_length=args.max_length, bs=args.bs, seed=SEED, classes=['rotten', 'fresh'], device='cpu')


def plan_tokens(trn, val, epochs: int) -> tuple[int, int, int]:
    "(real tokens, padded tokens, batches) of `epochs` epochs of training batches, from a fresh loader (the same plan)"
    dls = make_dls(trn, val)
    real = padded = nb = 0
    for _ in range(epochs):
        for x, _y in dls.train:
            real += int((x != dls.pad_id).sum()); padded += x.numel(); nb += 1
    return real, padded, nb


# ---------------------------------------------------------------- fastai's one-cycle schedule, written out

def one_cycle(lr_max: np.ndarray, pct_start=PCT_START, div=DIV, div_final=DIV_FINAL, moms=MOMS):
    "pos -> (lr per group, beta1): fastai's `combined_cos` for lr and momentum, with its arithmetic (float32 positions)"
    pcts = torch.cumsum(torch.tensor([0., pct_start, 1 - pct_start]), 0)

    def cos(start, end, pos): return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2

    def sched(pos: float):
        idx = min(int((pos >= pcts).nonzero().max()), len(pcts) - 2)
        actual = ((pos - pcts[idx]) / (pcts[idx + 1] - pcts[idx])).item()
        lr = cos(lr_max / div, lr_max, actual) if idx == 0 else cos(lr_max, lr_max / div_final, actual)
        mom = cos(moms[0], moms[1], actual) if idx == 0 else cos(moms[1], moms[2], actual)
        return lr, mom
    return sched


def lr_max_groups(n_groups: int) -> np.ndarray:
    "fastai's `set_hyper('lr', slice(lr / lr_mult, lr))` (even_mults) or one lr for every group"
    if args.lr_mult == 1: return np.array([args.lr] * n_groups)
    start, stop = args.lr / args.lr_mult, args.lr
    step = (stop / start) ** (1 / (n_groups - 1))
    return np.array([start * (step ** i) for i in range(n_groups)])


def lr_arg():
    return args.lr if args.lr_mult == 1 else slice(args.lr / args.lr_mult, args.lr)


# ---------------------------------------------------------------- contenders

def new_model(enc, n_out, pad_id):
    from mlopsnb.text import TextClassifier
    torch.manual_seed(SEED)
    return TextClassifier(copy.deepcopy(enc), n_out, pad_id, 0.1)


def plain_loop(enc, trn, val, epochs: int) -> dict:
    "(a) the loop people write: the same batches, AdamW over the same groups, fastai's one-cycle by hand, a valid pass per epoch"
    from mlopsnb.text import text_splitter
    dls = make_dls(trn, val)
    m = new_model(enc, len(dls.vocab), dls.pad_id)
    t_fit = time.perf_counter()
    opt = torch.optim.AdamW([{'params': g} for g in text_splitter(m)], lr=args.lr, weight_decay=WD)
    sched = one_cycle(lr_max_groups(len(opt.param_groups)))
    n_iter = len(dls.train)
    torch.manual_seed(SEED)  # dropout masks
    epoch_s, train_s, hist = [], [], []
    for epoch in range(epochs):
        t = time.perf_counter()
        pct = epoch / epochs
        m.train()
        for x, y in dls.train:
            lrs, mom = sched(pct)
            for g, lr in zip(opt.param_groups, lrs): g['lr'], g['betas'] = lr, (mom, g['betas'][1])
            loss = F.cross_entropy(m(x), y)
            loss.backward(); opt.step(); opt.zero_grad()
            pct += 1. / (n_iter * epochs)
        t_tr = time.perf_counter()
        m.eval(); tot, correct, n = 0., 0, 0
        with torch.no_grad():
            for x, y in dls.valid:
                out = m(x); tot += F.cross_entropy(out, y) * len(y); correct += (out.argmax(1) == y).sum(); n += len(y)
        hist.append((float(tot / n), float(correct / n)))  # the epoch's figures, read once
        train_s.append(t_tr - t); epoch_s.append(time.perf_counter() - t)
    return {'model': m, 'epoch_s': epoch_s, 'train_s': train_s, 'fit_s': time.perf_counter() - t_fit,
            'valid_loss': hist[-1][0], 'valid_acc': hist[-1][1]}


def _timer():
    "A callback timing each epoch and its training phase, printing nothing; its after_* run last"
    from fastai.callback.core import Callback

    class BenchTimer(Callback):
        order = 1000
        def before_fit(self): self.epoch_s, self.train_s = [], []
        def before_epoch(self): self.t0 = time.perf_counter()
        def after_train(self): self.train_s.append(time.perf_counter() - self.t0)
        def after_epoch(self): self.epoch_s.append(time.perf_counter() - self.t0)
    return BenchTimer()


def mlops_fit(enc, trn, val, epochs: int, io_: bool, show: bool = False) -> dict:
    "(c) text_learner with mlopsnb's defaults (tracking to a temp sqlite store, checkpoints in a temp folder); (c0) with no I/O"
    from mlopsnb.text import text_learner
    dls = make_dls(trn, val)
    timer = _timer()
    torch.manual_seed(SEED)  # the head's init, as in `new_model`
    kw = dict(tracking=True, checkpoint_dir=Path(tempfile.mkdtemp(dir=_STORE)), experiment='bench_text') if io_ else dict(tracking=False, checkpoint_dir=False)
    learn = text_learner(dls, encoder=copy.deepcopy(enc), lr=args.lr, wd=WD, progress='plain', cbs=[timer], **kw)
    torch.manual_seed(SEED)  # dropout masks
    t = time.perf_counter()
    if show: learn.fit_one_cycle(epochs, lr_arg())
    else:
        with contextlib.redirect_stdout(io.StringIO()): learn.fit_one_cycle(epochs, lr_arg())
    fit_s = time.perf_counter() - t
    vals = learn.recorder.values[-1]  # train loss, valid loss, accuracy
    return {'model': learn.model, 'learn': learn, 'epoch_s': timer.epoch_s, 'train_s': timer.train_s, 'fit_s': fit_s,
            'valid_loss': float(vals[1]), 'valid_acc': float(vals[2]),
            'epoch_records': [[float(v) for v in r] for r in learn.recorder.values]}


def max_abs_diff(m1, m2) -> float:
    s1, s2 = m1.state_dict(), m2.state_dict()
    return max(float((s1[k].float() - s2[k].float()).abs().max()) for k in s1)


# ---------------------------------------------------------------- 1. parity

def parity(enc, d) -> dict:
    n = args.parity_steps * args.bs
    if n > len(d['train'][0]): raise SystemExit(f"--parity-steps {args.parity_steps} x bs {args.bs} needs {n} training texts, there are {len(d['train'][0])}")
    trn = subset(*d['train'], n, seed=1)
    val = subset(*d['valid'], min(args.parity_valid, len(d['valid'][0])), seed=1)
    real, padded, nb = plan_tokens(trn, val, 1)
    assert nb == args.parity_steps, (nb, args.parity_steps)
    def contenders(trn, val):
        return {'a_plain_loop': lambda: plain_loop(enc, trn, val, 1),
                'c0_mlops_no_io': lambda: mlops_fit(enc, trn, val, 1, io_=False),
                'c_mlops_defaults': lambda: mlops_fit(enc, trn, val, 1, io_=True)}
    # warm-up: each contender once on 3 steps (first-call costs of kernels and optimizer, the MLflow store's creation)
    for k, f in contenders(subset(*trn, 3 * args.bs, seed=2), subset(*val, args.bs, seed=2)).items(): f()
    variants = contenders(trn, val)
    runs = {k: [] for k in variants}
    names = list(variants)
    for r in range(args.parity_repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            print(f"  parity repeat {r + 1}/{args.parity_repeats}: {k} (load {load()})", flush=True)
            runs[k].append(variants[k]())
    first = {k: v[0] for k, v in runs.items()}
    check = {k: {'max_abs_weight_diff_vs_a': max_abs_diff(first['a_plain_loop']['model'], first[k]['model']),
                 'bitwise_equal_to_a': all(torch.equal(x, y) for x, y in zip(first['a_plain_loop']['model'].state_dict().values(), first[k]['model'].state_dict().values())),
                 'valid_loss': first[k]['valid_loss'], 'valid_acc': first[k]['valid_acc']} for k in names}
    rows = []
    base = {q: statistics.median([x for r in runs['a_plain_loop'] for x in r[q]]) for q in ('epoch_s', 'train_s')}
    base['fit_s'] = statistics.median(r['fit_s'] for r in runs['a_plain_loop'])
    for k in names:
        ep = statistics.median([x for r in runs[k] for x in r['epoch_s']])
        tr = statistics.median([x for r in runs[k] for x in r['train_s']])
        fit = statistics.median(r['fit_s'] for r in runs[k])
        rows.append({'variant': k, 'epoch_s': ep, 'train_s': tr, 'fit_s': fit,
                     'real_tok_per_s_epoch': real / ep, 'padded_tok_per_s_epoch': padded / ep,
                     'real_tok_per_s_train': real / tr, 'texts_per_s_train': n / tr,
                     'ratio_epoch_vs_a': base['epoch_s'] / ep, 'ratio_train_vs_a': base['train_s'] / tr, 'ratio_fit_vs_a': base['fit_s'] / fit,
                     'runs_epoch_s': [x for r in runs[k] for x in r['epoch_s']]})
    return {'steps': args.parity_steps, 'bs': args.bs, 'train_texts': n, 'valid_texts': len(val[0]), 'repeats': args.parity_repeats,
            'real_tokens': real, 'padded_tokens': padded, 'pad_share': 1 - real / padded, 'rows': rows, 'check': check}


# ---------------------------------------------------------------- 2. accuracy

@torch.inference_mode()
def eager_predict(model, tok, pad_id, texts, classes):
    from mlopsnb.text_inputs import token_ids, pad_ids
    out = model(torch.from_numpy(pad_ids(token_ids(tok, texts), pad_id)))
    return classes[out.argmax(1).numpy()]


def accuracy_of(predict, texts, labels, bs=32) -> float:
    pred = np.concatenate([np.asarray(predict(texts[i:i + bs])) for i in range(0, len(texts), bs)])
    return float((pred == np.asarray(labels)).mean())


def full_fit(enc, d) -> dict:
    real, padded, nb = plan_tokens(d['train'], d['valid'], args.epochs)
    print(f"  fine-tuning {len(d['train'][0])} texts x {args.epochs} epochs ({nb} steps, {real:,} real / {padded:,} padded tokens), load {load()}", flush=True)
    r = mlops_fit(enc, d['train'], d['valid'], args.epochs, io_=True, show=True)
    return {**r, 'real_tokens': real, 'padded_tokens': padded, 'steps': nb}


# ---------------------------------------------------------------- 3. inference

def time_calls(fns: dict, inputs: list, rounds: int, per_round: int, warmup: int = 5) -> dict:
    "Per-call latencies (ms) of each fn on the same sequence of inputs, alternating fns round by round"
    for f in fns.values():
        for i in range(warmup): f(inputs[i % len(inputs)])
    lat = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        batch = [inputs[(r * per_round + i) % len(inputs)] for i in range(per_round)]
        for k in (names if r % 2 == 0 else names[::-1]):
            f, out = fns[k], lat[k]
            for x in batch:
                t = time.perf_counter_ns(); f(x); out.append((time.perf_counter_ns() - t) / 1e6)
    return {k: {'p50': float(np.percentile(v, 50)), 'p99': float(np.percentile(v, 99)), 'n': len(v)} for k, v in lat.items()}


def inference(learn, d) -> dict:
    from mlopsnb.export import export_bundle
    from mlopsnb.bundle import load_bundle
    from mlopsnb.text_inputs import token_ids, pad_ids
    t = time.perf_counter()
    bp = export_bundle(learn, _STORE / 'bundle', int8=True)
    export_s = time.perf_counter() - t
    spec = json.loads((Path(bp) / 'bundle.json').read_text())
    model = learn.model.cpu().eval()
    tok, pad_id, classes = learn.dls.tokenizer, learn.dls.pad_id, np.array(learn.dls.vocab)
    b32, b8 = load_bundle(bp, 'fp32', threads=args.threads), load_bundle(bp, 'int8', threads=args.threads)
    texts, labels = d['test']
    acc = {'torch eager': accuracy_of(lambda t: eager_predict(model, tok, pad_id, t, classes), texts, labels),
           'bundle fp32': accuracy_of(b32.predict, texts, labels), 'bundle int8': accuracy_of(b8.predict, texts, labels)}
    fns = {'torch eager': lambda t: eager_predict(model, tok, pad_id, t, classes),
           'bundle fp32': b32.predict, 'bundle int8': b8.predict,
           'tokenize only (reference)': lambda t: pad_ids(token_ids(tok, t), pad_id)}
    lat = {}
    for bs, per_round in ((1, 40), (32, 10)):
        inputs = [texts[i:i + bs] for i in range(0, len(texts) - bs + 1, bs)]
        lat[bs] = time_calls(fns, inputs, args.rounds, per_round)
        for v in lat[bs].values(): v['texts_per_s'] = bs / (v['p50'] / 1e3)
        print(f"  inference batch {bs} done (load {load()})", flush=True)
    bundle_dir = Path(bp)
    sizes = {'fp32_bytes': (bundle_dir / 'model.onnx').stat().st_size, 'int8_bytes': (bundle_dir / 'model.int8.onnx').stat().st_size}
    return {'latency_ms': {str(k): v for k, v in lat.items()}, 'test_accuracy': acc, 'export_s': export_s, 'sizes': sizes,
            'int8_speedup_bs32_p50': lat[32]['bundle fp32']['p50'] / lat[32]['bundle int8']['p50'],
            'int8_speedup_bs1_p50': lat[1]['bundle fp32']['p50'] / lat[1]['bundle int8']['p50'],
            'int8_accuracy_loss_points': 100 * (acc['bundle fp32'] - acc['bundle int8']),
            'parity_max_abs_diff': (spec.get('parity') or {}).get('max_abs_diff'), 'int8': spec.get('int8')}


# ---------------------------------------------------------------- report

def main():
    import onnxruntime as ort, transformers
    os.environ['MLFLOW_TRACKING_URI'] = f'sqlite:///{_STORE}/mlflow.db'
    os.environ['MLOPSNB_PROGRESS'] = 'plain'
    os.chdir(_STORE)  # anything written relative to the working directory (mlruns artifacts) goes to the temp store
    load0, t_all = os.getloadavg(), time.perf_counter()
    env = {'cpu': cpu_model(), 'cpu_count': os.cpu_count(), 'threads': args.threads, 'torch': torch.__version__,
           'onnxruntime': ort.__version__, 'transformers': transformers.__version__, 'python': platform.python_version(),
           'OMP_WAIT_POLICY': os.environ.get('OMP_WAIT_POLICY'), 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS')}
    print(f"bench/text.py: {env['cpu']}, {env['cpu_count']} CPUs, torch threads {args.threads} (get_num_threads {torch.get_num_threads()}), "
          f"onnxruntime intra-op threads {args.threads}; torch {env['torch']}, onnxruntime {env['onnxruntime']}, transformers {env['transformers']}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in load0)}{'  (--quick: subsets, figures are a smoke check only)' if args.quick else ''}", flush=True)
    if env['OMP_WAIT_POLICY'] or env['OMP_NUM_THREADS']: print(f"environment: OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}")
    if load0[0] > 0.5: print(f"WARNING: the machine is busy (load {load0[0]:.2f} on {os.cpu_count()} CPUs): torch's OpenMP threads degrade badly on shared "
                             "cores (spin-waiting), so timings, torch's above all, are not meaningful", flush=True)
    from mlopsnb.text import load_encoder, frozen_baseline
    d = data()
    print(f"data: train {len(d['train'][0])}, valid {len(d['valid'][0])}, test {len(d['test'][0])} texts", flush=True)
    enc = load_encoder()
    res = {'args': vars(args), 'env': env}

    if not args.skip_parity:
        print("\n[1] loop parity", flush=True)
        res['parity'] = parity(enc, d)
        if args.parity_only:
            for r in res['parity']['rows']:
                print(f"{r['variant']:18s} epoch s median {r['epoch_s']:.2f} (runs {', '.join(f'{t:.2f}' for t in r['runs_epoch_s'])}), "
                      f"{r['real_tok_per_s_epoch']:.0f} real tok/s, vs (a) {r['ratio_epoch_vs_a']:.3f}")
            print('bitwise equal to (a):', {k: c['bitwise_equal_to_a'] for k, c in res['parity']['check'].items()}, f"load {os.getloadavg()}")
            return

    print("\n[2] frozen baseline and fine-tuning", flush=True)
    fb = frozen_baseline(d['train'][0], d['train'][1], d['test'][0], d['test'][1], max_length=args.max_length)
    print(f"  frozen baseline: test accuracy {fb['accuracy']:.4f} in {fb['seconds']:.1f}s", flush=True)
    ft = full_fit(enc, d)
    learn = ft.pop('learn'); model = ft.pop('model')
    res['baseline'], res['fine_tune'] = fb, ft

    print("\n[3] inference", flush=True)
    res['inference'] = inf = inference(learn, d)
    load1 = os.getloadavg()
    res['load'] = [load0, load1]
    res['total_s'] = time.perf_counter() - t_all

    # ---- tables
    lines = [f"# bench/text.py{' (--quick)' if args.quick else ''}", '',
             f"{env['cpu']}, {env['cpu_count']} CPUs; torch {env['torch']} with {args.threads} threads, onnxruntime {env['onnxruntime']} "
             f"with {args.threads} intra-op threads; transformers {env['transformers']}",
             f"load average (1 min) {load0[0]:.2f} at start -> {load1[0]:.2f} at end; total {res['total_s'] / 60:.1f} min"
             + (f"; OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}" if env['OMP_WAIT_POLICY'] else '')
             + (f"; OMP_NUM_THREADS={env['OMP_NUM_THREADS']}" if env['OMP_NUM_THREADS'] else ''), '']
    if 'parity' in res:
        pr = res['parity']
        lines += [f"## Loop parity: {pr['steps']} training steps of bs {pr['bs']} ({pr['real_tokens']:,} real tokens, "
                  f"{pr['padded_tokens']:,} padded: {100 * pr['pad_share']:.1f}% padding) + {pr['valid_texts']} validation texts, "
                  f"{pr['repeats']} alternating repeats, medians", '',
                  f"{'variant':18s} {'epoch s':>8s} {'train s':>8s} {'fit s':>8s} {'real tok/s':>11s} {'padded tok/s':>12s} "
                  f"{'texts/s':>8s} {'vs (a)':>7s} {'train vs (a)':>12s} {'fit vs (a)':>10s}"]
        for r in pr['rows']:
            lines.append(f"{r['variant']:18s} {r['epoch_s']:8.2f} {r['train_s']:8.2f} {r['fit_s']:8.2f} {r['real_tok_per_s_epoch']:11.0f} "
                         f"{r['padded_tok_per_s_epoch']:12.0f} {r['texts_per_s_train']:8.1f} {r['ratio_epoch_vs_a']:7.3f} "
                         f"{r['ratio_train_vs_a']:12.3f} {r['ratio_fit_vs_a']:10.3f}")
        lines += ['', "tok/s over the epoch (training + validation + the epoch's callbacks); 'vs (a)' = (a)'s epoch time / this one's "
                  "(the tokens/s ratio); texts/s over the training phase", '',
                  f"{'variant':18s} {'max |w - w(a)|':>15s} {'bitwise = (a)':>14s} {'valid loss':>11s} {'valid acc':>10s}"]
        for k, c in pr['check'].items():
            lines.append(f"{k:18s} {c['max_abs_weight_diff_vs_a']:15.3e} {str(c['bitwise_equal_to_a']):>14s} {c['valid_loss']:11.5f} {c['valid_acc']:10.4f}")
        lines.append('')
    lines += [f"## Accuracy on the test split ({len(d['test'][0])} texts; train {len(d['train'][0])}, by movie)", '',
              f"{'model':48s} {'test acc':>9s} {'seconds':>9s}",
              f"{'frozen encoder + logistic regression':48s} {fb['accuracy']:9.4f} {fb['seconds']:9.1f}",
              f"{f'fine-tuned via mlopsnb ({args.epochs} ep, lr {args.lr:g}, bs {args.bs})':48s} {inf['test_accuracy']['torch eager']:9.4f} {ft['fit_s']:9.1f}",
              '', f"fine-tuning: training wall time {ft['fit_s']:.1f}s ({ft['fit_s'] / 60:.2f} min); epochs "
              + ', '.join(f"{e:.1f}s" for e in ft['epoch_s']) + f"; {ft['real_tokens'] / sum(ft['train_s']):.0f} real tok/s in training",
              "per epoch (train loss, valid loss, valid acc): " + '; '.join(', '.join(f'{v:.4f}' for v in r[:3]) for r in ft['epoch_records']), '',
              f"## Inference on raw test strings (p50 / p99 ms, texts/s at p50); bundle exported in {inf['export_s']:.1f}s, "
              f"fp32 {inf['sizes']['fp32_bytes'] / 2**20:.1f} MiB, int8 {inf['sizes']['int8_bytes'] / 2**20:.1f} MiB", '',
              f"{'contender':27s} {'bs1 p50':>8s} {'bs1 p99':>8s} {'bs1 t/s':>8s} {'bs32 p50':>9s} {'bs32 p99':>9s} {'bs32 t/s':>9s} {'test acc':>9s}"]
    l1, l32 = inf['latency_ms']['1'], inf['latency_ms']['32']
    for k in l1:
        a = inf['test_accuracy'].get(k)
        lines.append(f"{k:27s} {l1[k]['p50']:8.2f} {l1[k]['p99']:8.2f} {l1[k]['texts_per_s']:8.0f} {l32[k]['p50']:9.2f} {l32[k]['p99']:9.2f} "
                     f"{l32[k]['texts_per_s']:9.0f} {'' if a is None else f'{a:9.4f}'}")
    goals = {'test accuracy >= 0.85': (inf['test_accuracy']['torch eager'], inf['test_accuracy']['torch eager'] >= 0.85),
             'training <= 15 min': (ft['fit_s'] / 60, ft['fit_s'] <= 900),
             'int8 bundle >= 1.7x fp32 at bs32 (p50)': (inf['int8_speedup_bs32_p50'], inf['int8_speedup_bs32_p50'] >= 1.7),
             'int8 accuracy loss <= 1 point': (inf['int8_accuracy_loss_points'], inf['int8_accuracy_loss_points'] <= 1)}
    if 'parity' in res:
        c = next(r for r in res['parity']['rows'] if r['variant'] == 'c_mlops_defaults')
        goals['mlopsnb defaults >= 0.95x plain loop tokens/s'] = (c['ratio_epoch_vs_a'], c['ratio_epoch_vs_a'] >= 0.95)
    res['goals'] = {k: {'value': v, 'met': bool(ok)} for k, (v, ok) in goals.items()}
    lines += ['', f"int8 vs fp32 bundle: {inf['int8_speedup_bs32_p50']:.2f}x at bs32, {inf['int8_speedup_bs1_p50']:.2f}x at bs1 (p50); "
              f"accuracy loss {inf['int8_accuracy_loss_points']:+.2f} points; export parity max abs diff {inf['parity_max_abs_diff']}", '',
              '## Goals', ''] + [f"- {k}: {v:.3f} -> {'met' if ok else 'NOT met'}" for k, (v, ok) in goals.items()]
    text = '\n'.join(lines)
    print('\n' + text)
    from mlopsnb.core import atomic_write
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = 'text_quick' if args.quick else 'text'
    atomic_write(RESULTS / f'{name}.json', json.dumps(res, indent=1, default=str))
    atomic_write(RESULTS / f'{name}.md', text + '\n')
    print(f"\nwrote {RESULTS / f'{name}.json'} and {name}.md")


if __name__ == '__main__':
    try: main()
    finally:  # the temp store holds checkpoints, the MLflow store and the bundle (~1 GB)
        import shutil
        os.chdir(ROOT); shutil.rmtree(_STORE, ignore_errors=True)
