"""The fast path against the expert loop, side by side in one process.

GPU section (needs CUDA): fastai `Learner` + `learn.to_fast()` fed by `TensorBatches` on the device against
the expert hand-written loop `gpu_loop.py` (found beside the checkout, or given with --gpu-loop; GPU-resident data, bf16 autocast, channels_last), which is
imported and run as is: same ResNet-9, same synthetic 32x32 data, batch size 512, SGD(0.9, nesterov for the expert),
lr 0.1, wd 5e-4. Alternating expert/ours repeats; each repeat is gpu_loop's protocol (one warm-up epoch, best of 2
timed epochs). Reports img/s, TFLOP/s (FlopCounterMode count of one training step) and ours/expert. Optional: fastai's
best from gpu_loop (`--fastai`) and both sides with torch.compile (`--compile`).

CPU section (always): the MNIST quickstart (5,000 real digits, its CNN, bs 64) trained with and without `to_fast()`,
alternating, median epoch time, and whether both ended with identical weights (only where to_fast chose fp32 and
NCHW; on a CPU with native bf16 it trains this CNN in bf16 and channels_last, so they differ).

Without CUDA the GPU section prints why it was skipped and the script exits 0.
Usage: python bench/gpu_fastpath.py [--repeats R] [--gpu-loop PATH] [--fastai] [--compile] [--skip-cpu] [--cpu-epochs E]
Writes bench/results/gpu_fastpath.json."""
from __future__ import annotations
import argparse, importlib.util, json, os, statistics, sys, time
from functools import partial
from pathlib import Path

import torch, torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mlopsnb.core import atomic_write, seed_everything
from mlopsnb.loaders import tensor_dls, NormalizeImages
from mlopsnb.fastpath import precision_policy  # noqa: F401
from mlopsnb.loaders import TensorBatches

p = argparse.ArgumentParser()
p.add_argument('--repeats', type=int, default=3)
p.add_argument('--gpu-loop', default=os.environ.get('MLOPSNB_GPU_LOOP'))
p.add_argument('--fastai', action='store_true', help="also run gpu_loop's fastai bf16 baselines")
p.add_argument('--compile', action='store_true', help='also compare expert+compile with to_fast(compile=True)')
p.add_argument('--skip-cpu', action='store_true')
p.add_argument('--cpu-epochs', type=int, default=3)
p.add_argument('--threads', type=int, default=1, help='CPU threads for the CPU section')
args = p.parse_args()
results: dict = {}

def table(title, rows, cols):
    print(f"\n== {title}")
    w = [max(len(str(c)), *(len(str(r.get(c, ''))) for r in rows)) for c in cols]
    print('  '.join(str(c).ljust(x) for c, x in zip(cols, w)))
    for r in rows: print('  '.join(str(r.get(c, '')).ljust(x) for c, x in zip(cols, w)))

# ---------------------------------------------------------------- CPU: MNIST quickstart with and without to_fast()
def cpu_section():
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    import fastai.callback.progress  # noqa: F401 (no_bar)
    from mlopsnb.datasets import mnist_5k, stratified_split
    torch.set_num_threads(args.threads)
    d = mnist_5k(); trn, val = stratified_split(d.y, 0.2, seed=0)
    x, y = torch.from_numpy(d.x), torch.from_numpy(d.y)
    def conv_block(ci, co): return nn.Sequential(nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU())
    def learner(fast):
        seed_everything(0)
        dls = tensor_dls(x[trn], y[trn], x[val], y[val], bs=64, seed=0, device='cpu', tfms=[NormalizeImages(0.1307, 0.3081)])
        model = nn.Sequential(conv_block(1, 32), nn.MaxPool2d(2), conv_block(32, 64), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10))
        learn = Learner(dls, model, loss_func=nn.CrossEntropyLoss(), metrics=accuracy)
        if fast: learn.to_fast(verbose=False)
        return learn
    times = {'plain': [], 'to_fast': []}
    final = {}
    for rep in range(args.repeats):
        for name in ('plain', 'to_fast') if rep % 2 == 0 else ('to_fast', 'plain'):
            learn = learner(name == 'to_fast')
            with learn.no_bar(), learn.no_logging():
                for e in range(args.cpu_epochs):
                    t = time.perf_counter(); learn.fit(1); dt = time.perf_counter() - t
                    if e: times[name].append(dt)          # epoch 0 is warm-up
                final[name] = (learn.model.state_dict(), learn.validate()[1])
                if name == 'to_fast': fast_precision = learn.mlops.fast.policy.precision
    same = all(torch.equal(a, b) for a, b in zip(final['plain'][0].values(), final['to_fast'][0].values()))
    n = len(trn)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [{'variant': k, 'epoch s (median)': f"{med[k]:.3f}", 'img/s': f"{n / med[k]:.0f}", 'accuracy': f"{float(final[k][1]):.4f}"} for k in med]
    rows.append({'variant': 'to_fast / plain (speed)', 'epoch s (median)': '', 'img/s': f"{med['plain'] / med['to_fast']:.3f}x"})
    table(f"CPU, MNIST quickstart CNN, bs 64, {args.threads} thread(s), policy: {fast_precision}; "
          f"identical final weights: {same}", rows, ['variant', 'epoch s (median)', 'img/s', 'accuracy'])
    results['cpu_mnist'] = {'epoch_s': med, 'img_s': {k: n / v for k, v in med.items()}, 'speed_ratio_to_fast_over_plain': med['plain'] / med['to_fast'],
                            'identical_weights': same, 'threads': args.threads, 'epochs_timed': args.cpu_epochs - 1, 'repeats': args.repeats}

# ---------------------------------------------------------------- GPU: to_fast + TensorBatches vs the expert loop
def find_gpu_loop() -> Path:
    cands = [args.gpu_loop] if args.gpu_loop else [ROOT.parent/'shared'/'bench'/'gpu_loop.py', ROOT/'shared'/'bench'/'gpu_loop.py']
    for c in cands:
        if c and Path(c).exists(): return Path(c)
    sys.exit(f"gpu_fastpath: the expert loop (gpu_loop.py) was not found in {[str(c) for c in cands]}; pass --gpu-loop PATH")

def gpu_section():
    path = find_gpu_loop()
    spec = importlib.util.spec_from_file_location('gpu_loop', path)
    gl = importlib.util.module_from_spec(spec); spec.loader.exec_module(gl)   # builds its data on import
    from fastai.learner import Learner
    from fastai.data.core import DataLoaders
    from fastai.optimizer import SGD
    import fastai.callback.progress  # noqa: F401
    dev = gl.dev
    pol = precision_policy('cuda', log=False)
    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__} policy: {pol}")

    def ours(compile=False):
        torch.manual_seed(0)
        Xg = gl.Xf.to(dev).contiguous(memory_format=torch.channels_last); yg = gl.y.to(dev)
        trn = TensorBatches(Xg, yg, bs=gl.BS, shuffle=True, drop_last=True, seed=0)
        val = TensorBatches(Xg[:gl.BS], yg[:gl.BS], bs=gl.BS)
        learn = Learner(DataLoaders(trn, val, device=dev), gl.resnet9(), loss_func=nn.CrossEntropyLoss(),
                        opt_func=partial(SGD, mom=0.9), lr=0.1, wd=5e-4)
        learn.to_fast(compile=compile, verbose=False)
        with learn.no_bar(), learn.no_logging():
            learn.fit(1)  # warm-up: cudnn autotune (and compile)
            return min(gl.timed(lambda: learn.fit(1)) for _ in range(gl.EPOCHS)), learn.mlops.fast
    fl = gl.flops_per_step(); steps = gl.N // gl.BS
    runs = {'expert (gpu_loop raw_expert_bf16)': lambda: gl.raw(False), 'to_fast + TensorBatches': lambda: ours()[0]}
    if args.compile:
        runs['expert + compile'] = lambda: gl.raw(False, True)
        runs['to_fast(compile=True) + TensorBatches'] = lambda: ours(True)[0]
    if args.fastai:
        runs['fastai bf16 + channels_last (gpu_loop)'] = lambda: gl.fa('bf16')
        runs['fastai bf16, 15-line GPU batches (gpu_loop)'] = lambda: gl.fa_gpubatches()
    times = {k: [] for k in runs}
    keys = list(runs)
    for rep in range(args.repeats):
        for k in (keys if rep % 2 == 0 else keys[::-1]):   # alternate the order between repeats
            times[k].append(runs[k]()); print(f"  {k}: {steps * gl.BS / times[k][-1]:,.0f} img/s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med['expert (gpu_loop raw_expert_bf16)']
    rows = [{'loop': k, 'epoch s': f"{s:.3f}", 'img/s': f"{steps * gl.BS / s:,.0f}", 'TFLOP/s': f"{fl * steps / s / 1e12:.1f}",
             'vs expert': f"{base / s:.3f}x"} for k, s in med.items()]
    table(f"GPU, ResNet-9 32x32, bs {gl.BS}, {gl.N} images/epoch, {fl / 1e9:.1f} GFLOP/step, median of {args.repeats} alternating repeats",
          rows, ['loop', 'epoch s', 'img/s', 'TFLOP/s', 'vs expert'])
    results['gpu'] = {'device': torch.cuda.get_device_name(), 'torch': torch.__version__, 'policy': pol.as_params(),
                      'flops_per_step': fl, 'epoch_s': med, 'img_s': {k: steps * gl.BS / s for k, s in med.items()},
                      'tflops': {k: fl * steps / s / 1e12 for k, s in med.items()}, 'ratio_vs_expert': {k: base / s for k, s in med.items()},
                      'repeats': args.repeats}

if not args.skip_cpu: cpu_section()
if torch.cuda.is_available(): gpu_section()
else:
    print("\ngpu_fastpath: no CUDA device here (torch.cuda.is_available() is False): GPU section skipped. "
          "Run it on a GPU machine: python bench/gpu_fastpath.py [--fastai] [--compile]")
    results['gpu'] = {'skipped': 'no CUDA device'}
out = ROOT/'bench'/'results'/'gpu_fastpath.json'
atomic_write(out, json.dumps(results, indent=1, default=str))
print(f"\nwrote {out.relative_to(ROOT)}")
