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
    import torch
    from fastai.tabular.all import TabularDataLoaders, Categorify, FillMissing, Normalize, tabular_learner
    import fastai.callback.schedule  # noqa: F401  (Learner.fit_one_cycle)
    from mlopsnb.datasets import penguins, stratified_split
    from mlopsnb.export import export_bundle
    from _trained import mnist_cnn_learner
    d = tmp_path_factory.mktemp('bundles')
    learn, data, val = mnist_cnn_learner(1000, 300, 1)
    dls = learn.dls
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
