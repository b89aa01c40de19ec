"""Inference latency of an exported MNIST CNN: torch eager vs a bare onnxruntime session vs the bundle runtime vs int8.

Trains a small CNN on mnist_5k (4,000 train / 1,000 held-out digits), exports it with `export_bundle(int8=True)`, then
times, alternating the contenders round by round after a warm-up, single calls at batch 1 and batch 32:

- torch eager: the fastai model on preprocessed input (and with `NormalizeImages` from raw uint8, for reference);
- bare ORT: an `InferenceSession` on model.onnx, fed preprocessed float32 (same session options as the bundle), one
  with onnxruntime's default options, and the session's C++ binding called directly (`mlopsnb.compat.onnx_session_runner`, what
  the bundle uses after validating inputs itself), to show how much of the gap is onnxruntime's Python wrapper;
- bundle: `load_bundle(...).predict(x, preprocessed=True)` and `.predict(raw_uint8)` (preprocessing in numpy);
- int8: a bare session on model.int8.onnx (static QDQ, per-channel) and on a dynamically quantized model.

Prints a summary table with p50/p99 (ms) and the goal ratios; writes bench/results/inference.json.
Usage: python bench/inference.py [--threads N] [--rounds R] [--epochs E]
"""
import argparse, json, os, sys, tempfile, time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def small_cnn(n_classes=10):
    import torch.nn as nn
    return nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 4 * 4, n_classes))


def train(epochs):
    import torch
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy
    import fastai.callback.schedule  # noqa: F401
    from mlopsnb.datasets import mnist_5k, stratified_split
    from mlopsnb.loaders import tensor_dls, NormalizeImages
    torch.manual_seed(0)
    data = mnist_5k()
    trn, val = stratified_split(data.y, 0.2, seed=0)
    norm = NormalizeImages(float(data.x[trn].mean() / 255), float(data.x[trn].std() / 255))
    dls = tensor_dls(torch.from_numpy(data.x[trn]), torch.from_numpy(data.y[trn]), torch.from_numpy(data.x[val]),
                     torch.from_numpy(data.y[val]), bs=64, device='cpu', tfms=[norm])
    learn = Learner(dls, small_cnn(), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    from fastai.callback.progress import ProgressCallback  # noqa: F401  (Learner.no_bar)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 5e-3)
    return learn, data, val, norm


def time_calls(fns: dict, rounds: int, per_round: int, warmup: int = 50) -> dict:
    "Per-call latencies (ms) of each fn, alternating fns round by round so machine noise hits all of them alike"
    for f in fns.values():
        for _ in range(warmup): f()
    lat = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for k in order:
            f, out = fns[k], lat[k]
            for _ in range(per_round):
                t = time.perf_counter_ns(); f(); out.append((time.perf_counter_ns() - t) / 1e6)
    return {k: {'p50': float(np.percentile(v, 50)), 'p99': float(np.percentile(v, 99)), 'n': len(v)} for k, v in lat.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--threads', type=int, default=min(os.cpu_count() or 1, 4), help='intra-op threads for torch and ORT')
    ap.add_argument('--rounds', type=int, default=20)
    ap.add_argument('--epochs', type=int, default=2)
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'inference.json'))
    a = ap.parse_args()
    import torch, onnxruntime as ort
    from mlopsnb.export import export_bundle, quantize_int8
    from mlopsnb.bundle import load_bundle
    from mlopsnb.compat import onnx_session_runner
    torch.set_num_threads(a.threads)
    t0 = time.time()
    learn, data, val, norm = train(a.epochs)
    print(f"trained in {time.time() - t0:.1f}s", flush=True)
    tmp = Path(tempfile.mkdtemp())
    bp = export_bundle(learn, tmp / 'mnist', classes=data.classes, int8=True)
    spec = json.loads((bp / 'bundle.json').read_text())
    quantize_int8(bp / 'model.onnx', tmp / 'model.dyn.onnx', method='dynamic')
    model = learn.model.eval()
    b = load_bundle(bp, threads=a.threads)
    bq = load_bundle(bp, 'int8', threads=a.threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = a.threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    bare = ort.InferenceSession(str(bp / 'model.onnx'), so, providers=['CPUExecutionProvider'])
    bare_default = ort.InferenceSession(str(bp / 'model.onnx'), providers=['CPUExecutionProvider'])
    bare_q = ort.InferenceSession(str(bp / 'model.int8.onnx'), so, providers=['CPUExecutionProvider'])
    bare_dyn = ort.InferenceSession(str(tmp / 'model.dyn.onnx'), so, providers=['CPUExecutionProvider'])
    x_val, y_val = data.x[val], data.y[val]
    out_names = [o.name for o in bare.get_outputs()]
    bare_runner = onnx_session_runner(bare)

    # accuracy on all 1,000 held-out digits and max abs diff vs torch
    pre_all = b.preprocess(x_val)['input']
    with torch.inference_mode(): t_logits = model(torch.from_numpy(pre_all)).numpy()
    acc = {'torch': float((t_logits.argmax(1) == y_val).mean())}
    for k, s in (('fp32_ort', bare), ('int8_static', bare_q), ('int8_dynamic', bare_dyn)):
        out = s.run(None, {'input': pre_all})[0]
        acc[k] = float((out.argmax(1) == y_val).mean())
        acc[f'{k}_max_abs_diff_vs_torch'] = float(np.abs(out - t_logits).max())
    print('accuracy', acc, flush=True)

    results = {}
    for bs in (1, 32):
        raw = np.ascontiguousarray(x_val[:bs])
        pre = np.ascontiguousarray(pre_all[:bs])
        pre_t, raw_t = torch.from_numpy(pre), torch.from_numpy(raw)

        def eager():
            with torch.inference_mode(): return model(pre_t).argmax(1)

        def eager_raw():
            with torch.inference_mode(): return model(norm(raw_t)).argmax(1)

        fns = {'torch eager': eager, 'torch eager + preprocessing': eager_raw,
               'bare ORT': lambda: bare.run(None, {'input': pre}),
               'bare ORT (default options)': lambda: bare_default.run(None, {'input': pre}),
               'bare ORT (C binding)': lambda: bare_runner(out_names, {'input': pre}),
               'bundle.predict (preprocessed)': lambda: b.predict(pre, preprocessed=True),
               'bundle.predict (raw uint8)': lambda: b.predict(raw),
               'int8 bare ORT (static QDQ)': lambda: bare_q.run(None, {'input': pre}),
               'int8 bare ORT (dynamic)': lambda: bare_dyn.run(None, {'input': pre}),
               'int8 bundle.predict (raw uint8)': lambda: bq.predict(raw)}
        per_round = 100 if bs == 1 else 20
        results[bs] = time_calls(fns, a.rounds, per_round)
        print(f"batch {bs} done", flush=True)

    r1, r32 = results[1], results[32]
    ratios = {
        'bs1 bundle raw / eager p50 (goal <= 0.3)': r1['bundle.predict (raw uint8)']['p50'] / r1['torch eager']['p50'],
        'bs1 bundle raw / eager+preprocessing p50': r1['bundle.predict (raw uint8)']['p50'] / r1['torch eager + preprocessing']['p50'],
        'bs1 bundle preprocessed / bare ORT p50 (goal <= 1.1)': r1['bundle.predict (preprocessed)']['p50'] / r1['bare ORT']['p50'],
        'bs32 bundle preprocessed / bare ORT p50 (goal <= 1.1)': r32['bundle.predict (preprocessed)']['p50'] / r32['bare ORT']['p50'],
        'bs1 bundle preprocessed / bare ORT C binding p50': r1['bundle.predict (preprocessed)']['p50'] / r1['bare ORT (C binding)']['p50'],
        'bs32 fp32 ORT / int8 static p50 (goal >= 1.5)': r32['bare ORT']['p50'] / r32['int8 bare ORT (static QDQ)']['p50'],
        'bs32 fp32 ORT / int8 dynamic p50': r32['bare ORT']['p50'] / r32['int8 bare ORT (dynamic)']['p50'],
        'bs1 fp32 ORT / int8 static p50': r1['bare ORT']['p50'] / r1['int8 bare ORT (static QDQ)']['p50'],
        'int8 static accuracy loss (points, goal <= 0.5)': 100 * (acc['fp32_ort'] - acc['int8_static']),
        'int8 dynamic accuracy loss (points)': 100 * (acc['fp32_ort'] - acc['int8_dynamic']),
    }
    sizes = {'fp32_bytes': (bp / 'model.onnx').stat().st_size, 'int8_static_bytes': (bp / 'model.int8.onnx').stat().st_size,
             'int8_dynamic_bytes': (tmp / 'model.dyn.onnx').stat().st_size}

    import platform
    print(f"\n== inference latency, MNIST CNN, {a.threads} threads, {platform.processor() or platform.machine()}, "
          f"ORT {ort.__version__}, torch {torch.__version__}, exporter {spec['model']['exporter']}")
    print(f"{'contender':34s} {'bs1 p50':>9s} {'bs1 p99':>9s} {'bs32 p50':>9s} {'bs32 p99':>9s}   (ms)")
    for k in r1:
        print(f"{k:34s} {r1[k]['p50']:9.4f} {r1[k]['p99']:9.4f} {r32[k]['p50']:9.4f} {r32[k]['p99']:9.4f}")
    print("\nratios")
    for k, v in ratios.items(): print(f"  {k:58s} {v:8.3f}")
    print(f"\naccuracy on 1,000 held-out digits: torch {acc['torch']:.4f}, fp32 ORT {acc['fp32_ort']:.4f}, "
          f"int8 static {acc['int8_static']:.4f}, int8 dynamic {acc['int8_dynamic']:.4f}")
    print(f"max abs diff vs torch: fp32 {acc['fp32_ort_max_abs_diff_vs_torch']:.2e}; parity at export (raw inputs) {spec['parity']['max_abs_diff']:.2e}")
    print(f"sizes: fp32 {sizes['fp32_bytes']:,} B, int8 static {sizes['int8_static_bytes']:,} B, int8 dynamic {sizes['int8_dynamic_bytes']:,} B")
    out = {'threads': a.threads, 'rounds': a.rounds, 'latency_ms': {str(k): v for k, v in results.items()}, 'ratios': ratios,
           'accuracy': acc, 'sizes': sizes, 'parity': spec['parity']['max_abs_diff'], 'exporter': spec['model']['exporter'],
           'versions': {'onnxruntime': ort.__version__, 'torch': torch.__version__}, 'cpu_count': os.cpu_count()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    from mlopsnb.core import atomic_write
    atomic_write(a.out, json.dumps(out, indent=1))
    print(f"wrote {a.out}")


if __name__ == '__main__':
    main()
