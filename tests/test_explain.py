"""Do `mlopsnb.explain`'s attributions mean something? Model randomization (Adebayo et al. 2018), a planted feature,
completeness, and the callback's end-of-fit behaviour. Each test prints its figures (`pytest -s` shows them)."""
import copy, time
import numpy as np
import pytest

pytest.importorskip('captum')

RANDOMIZATION_MAX = 0.5  # mean per-image Spearman correlation, trained vs re-initialized model, above which a method fails
N_IMAGES = 20


def _spearman(a, b) -> float:
    "Spearman rank correlation; a constant map ranks nothing, so it agrees with nothing (0)"
    from scipy.stats import spearmanr
    if np.ptp(a) == 0 or np.ptp(b) == 0: return 0.0
    return float(spearmanr(a, b)[0])


@pytest.fixture(scope='module')
def mnist():
    "(trained learner, the same architecture re-initialized, raw validation digits)"
    import torch
    from fastai.learner import Learner
    from _trained import mnist_cnn_learner
    learn, data, val = mnist_cnn_learner(2000, 300, 2)
    model = copy.deepcopy(learn.model)
    torch.manual_seed(1)
    for m in model.modules():
        if hasattr(m, 'reset_parameters'): m.reset_parameters()
    return learn, Learner(learn.dls, model, loss_func=learn.loss_func), data.x[val[:N_IMAGES]]


def test_model_randomization(mnist):
    """Protocol: 20 validation digits, each method explaining the trained model's predicted class in both models;
    Spearman correlation of |attribution| over all 784 pixels, per image, averaged. It must stay below 0.5.
    Honest caveat, printed too: |IG| correlates with |input - baseline| whatever the weights (IG multiplies the gradient by
    it), so its correlation with the normalized input itself is similar for both models; the comparison of the two
    models is what tells whether the map depends on what the model learned."""
    from mlopsnb.explain import explain, model_inputs
    learn, rnd, x = mnist
    (xin,), _ = model_inputs(learn, x)
    for method in ('ig', 'gradcam', 'occlusion'):
        a = explain(learn, x, method)
        b = explain(rnd, x, method, target=a.target)
        r = np.mean([_spearman(np.abs(p).ravel(), np.abs(q).ravel()) for p, q in zip(a.attributions, b.attributions)])
        inp = [np.mean([_spearman(np.abs(p).ravel(), np.abs(i[0].numpy()).ravel()) for p, i in zip(e.attributions, xin)]) for e in (a, b)]
        print(f"\nrandomization {method}: trained vs random Spearman(|attr|) = {r:.3f} (threshold < {RANDOMIZATION_MAX}); "
              f"Spearman with |normalized input|: trained {inp[0]:.3f}, random {inp[1]:.3f}")
        assert r < RANDOMIZATION_MAX, f"{method}: attributions of a trained and a random model agree (Spearman {r:.3f})"


def test_image_completeness(mnist):
    "IG: the attributions sum to f(x) - f(baseline) up to the convergence delta it reports, and that delta is small"
    import torch
    from mlopsnb.explain import explain, model_inputs
    learn, _, x = mnist
    e = explain(learn, x[:10], 'ig', n_steps=64, internal_batch_size=32)
    (xin,), _ = model_inputs(learn, x[:10])
    model = learn.model.eval()
    with torch.no_grad():
        f = lambda inp: model(inp)[torch.arange(10), torch.as_tensor(e.target)].numpy()
        diff = f(xin) - f(torch.zeros_like(xin))   # the baseline: 0 in the normalized space (the training mean)
    gap = e.attributions.reshape(10, -1).sum(1) - diff
    print(f"\nimage IG completeness: |f(x)-f(b)| mean {np.abs(diff).mean():.3f}, |delta| max {np.abs(e.delta).max():.2e}, "
          f"|sum - (f(x)-f(b)) - delta| max {np.abs(gap - e.delta).max():.2e}")
    np.testing.assert_allclose(gap, e.delta, atol=1e-4)
    assert np.abs(e.delta).max() <= 0.02 * np.abs(diff).max()


def _planted(kind:str, n:int=800, seed:int=0):
    "A table whose target depends on one column only: 'signal' (numeric, regression) or 'signal_cat' (categorical, classification)"
    import pandas as pd
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({'noise_a': rng.normal(size=n), 'noise_b': rng.normal(size=n), 'signal': rng.normal(size=n),
                       'noise_cat': rng.choice(list('pqrst'), n), 'signal_cat': rng.choice(list('abcd'), n)})
    if kind == 'numeric': df['y'] = 3 * df.signal + 0.1 * rng.normal(size=n)
    else: df['y'] = df.signal_cat.map({'a': 'yes', 'b': 'no', 'c': 'yes', 'd': 'no'})
    return df


@pytest.mark.parametrize('kind', ['numeric', 'categorical'])
def test_planted_feature(kind):
    "The one column the target depends on ranks first for integrated gradients and for permutation importance"
    import torch
    from fastai.data.block import RegressionBlock
    from fastai.tabular.all import TabularDataLoaders, Categorify, Normalize, tabular_learner
    import fastai.callback.schedule  # noqa: F401
    from mlopsnb.explain import explain
    torch.manual_seed(0)
    df = _planted(kind)
    dls = TabularDataLoaders.from_df(df, y_names='y', cat_names=['noise_cat', 'signal_cat'], cont_names=['noise_a', 'noise_b', 'signal'],
                                     procs=[Categorify, Normalize], valid_idx=list(range(600, 800)), bs=64,
                                     y_block=RegressionBlock() if kind == 'numeric' else None)
    learn = tabular_learner(dls, layers=[32, 16])
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(6, 1e-2)
    planted = 'signal' if kind == 'numeric' else 'signal_cat'
    ig = explain(learn, df.iloc[600:800], 'ig', n_steps=32)
    perm = explain(learn, None, 'permutation', n_repeats=3)
    for e in (ig, perm):
        imp = e.importance()
        print(f"\nplanted {kind} ({planted}), {e.method}: " + ', '.join(f"{k} {v:.3g}" for k, v in imp.items())
              + (f" [{perm.settings['metric']} {perm.settings['score']:.3f}]" if e is perm else f" [|delta| max {np.abs(ig.delta).max():.1e}]"))
        assert next(iter(imp)) == planted, f"{e.method} ranks {next(iter(imp))!r} first, not the planted {planted!r}"
    assert np.abs(ig.delta).max() < 0.05 * np.abs(ig.attributions.sum(1)).max()


def test_callback_skips_cancelled_and_validation(mnist, tmp_path):
    "No explanation after a cancelled fit or a `validate()`; a full fit logs the overlay grids and the arrays"
    import mlflow
    from fastai.callback.core import Callback, CancelFitException
    from mlopsnb.explain import ExplainCallback
    from fastai.learner import Learner
    from mlopsnb.tracking_callback import MLflowCallback
    trained, _, _ = mnist
    learn = Learner(trained.dls, copy.deepcopy(trained.model), loss_func=trained.loss_func)  # a copy: the fixture stays as trained
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")

    class Stop(Callback):
        def after_epoch(self): raise CancelFitException()
    xcb = ExplainCallback(per_class=1, n_mistakes=2)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-4, cbs=[xcb, Stop()])
    assert xcb.logged == [] and xcb.explanations == {}
    mcb = MLflowCallback(experiment='explain-test')
    with learn.no_bar(), learn.no_logging():
        t0 = time.perf_counter(); learn.fit(1, 1e-4, cbs=[mcb, xcb]); fit_s = time.perf_counter() - t0
    names = sorted(f.path for f in mlflow.MlflowClient().list_artifacts(mcb.run_id, 'explain'))
    print(f"\ncallback: {xcb.seconds:.2f} s of a {fit_s:.2f} s one-epoch fit on 2,000 digits; logged {names}")
    assert 'explain/ig_overlay.png' in names and 'explain/ig.npy' in names and 'explain/gradcam_overlay.png' in names
    with learn.no_bar(), learn.no_logging(): learn.validate(cbs=[xcb])
    assert xcb.logged == []


@pytest.mark.slow
def test_callback_cost_on_the_quickstart():
    "ExplainCallback adds at most 5% to the quickstart's fit (its CNN, 4,000 digits, 10 epochs)"
    import torch, torch.nn as nn
    from fastai.metrics import accuracy
    import fastai.callback.schedule  # noqa: F401
    from mlopsnb.datasets import mnist_5k, stratified_split
    from mlopsnb.loaders import tensor_dls, NormalizeImages
    from mlopsnb.callbacks import mlops_learner
    from mlopsnb.explain import ExplainCallback
    data = mnist_5k()
    trn, val = stratified_split(data.y, valid_pct=0.2, seed=0)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    dls = tensor_dls(x[trn], y[trn], x[val], y[val], bs=64, seed=0, device='cpu', tfms=[NormalizeImages(0.1307, 0.3081)])
    block = lambda ci, co: nn.Sequential(nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU())
    torch.manual_seed(0)
    model = nn.Sequential(block(1, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10))
    xcb = ExplainCallback()
    learn = mlops_learner(dls, model, loss_func=nn.CrossEntropyLoss(), metrics=accuracy, tracking=False, progress='none', cbs=[xcb])
    t0 = time.perf_counter(); learn.fit_one_cycle(10, 5e-3); fit_s = time.perf_counter() - t0
    print(f"\nquickstart fit {fit_s:.1f} s (with the callback), ExplainCallback {xcb.seconds:.2f} s = {100 * xcb.seconds / (fit_s - xcb.seconds):.1f}%")
    assert xcb.seconds <= 0.05 * (fit_s - xcb.seconds)
