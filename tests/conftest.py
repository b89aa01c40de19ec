import os

# `mlopsnb run` uses a background warm runner unless told otherwise; tests opt in explicitly (tests/test_daemon.py and
# the `runner` cases of tests/test_jobs.py, each with a private runner folder) so a test session leaves no process behind.
os.environ.setdefault('MLOPSNB_DAEMON', '0')
os.environ.pop('MLOPSNB_DAEMON_DIR', None)


import numpy as np
import pytest


@pytest.fixture(scope='session')
def bundles(tmp_path_factory):
    "An MNIST CNN bundle (with int8) and a penguins tabular bundle, exported from briefly trained fastai Learners"
    import torch, torch.nn as nn
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    import fastai.callback.schedule  # noqa: F401  (Learner.fit_one_cycle)
    from fastai.tabular.all import TabularDataLoaders, Categorify, FillMissing, Normalize, tabular_learner
    from mlopsnb.datasets import mnist_5k, penguins, stratified_split
    from mlopsnb.loaders import tensor_dls, NormalizeImages
    from mlopsnb.export import export_bundle
    d = tmp_path_factory.mktemp('bundles')
    torch.manual_seed(0)
    data = mnist_5k()
    trn, val = stratified_split(data.y, 0.2, seed=0)
    trn, val = trn[:1000], val[:300]
    dls = tensor_dls(torch.from_numpy(data.x[trn]), torch.from_numpy(data.y[trn]), torch.from_numpy(data.x[val]),
                     torch.from_numpy(data.y[val]), bs=64, device='cpu', tfms=[NormalizeImages(0.13, 0.31)])
    model = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat())
    with learn.no_logging(): learn.fit_one_cycle(1, 1e-2)
    img = export_bundle(learn, d / 'mnist', classes=data.classes, int8=True, dynamo=False)  # dynamo is covered by nbs/30_export
    x_val = data.x[val[:40]]
    with torch.no_grad(): img_pred = np.array(data.classes)[learn.model.eval()(dls.valid.tfms[0](torch.from_numpy(x_val))).argmax(1).numpy()]
    df = penguins()
    _, pval = stratified_split(df.species, 0.2, seed=0)
    tdls = TabularDataLoaders.from_df(df, y_names='species', cat_names=['island', 'sex'],
                                      cont_names=['bill_length_mm', 'bill_depth_mm', 'flipper_length_mm', 'body_mass_g'],
                                      procs=[Categorify, FillMissing, Normalize], valid_idx=list(pval), bs=32)
    tlearn = tabular_learner(tdls, layers=[16], metrics=None)
    with tlearn.no_bar(), tlearn.no_logging(): tlearn.fit_one_cycle(2, 1e-2)
    raw = df.iloc[pval]
    tab = export_bundle(tlearn, d / 'penguins', example=raw, dynamo=False)
    with tlearn.no_bar(): tab_proba = tlearn.get_preds(dl=tdls.test_dl(raw))[0].numpy()
    return {'dir': d, 'img': img, 'x_val': x_val, 'img_pred': img_pred, 'tab': tab, 'raw': raw, 'tab_proba': tab_proba, 'tlearn': tlearn}
