"""fastai's standard pipelines with mlopsnb: `ImageDataLoaders.from_folder` (real PNG files), a `DataBlock` with
`aug_transforms`, and fastai tabular, trained with `mlops_learner` (a plain torch loss) or fastai's own learners with
`MLflowCallback`; each run has its metrics, the classifiers' confusion matrix, and its data as MLflow dataset inputs."""
import os
from pathlib import Path

import pytest, torch, torch.nn as nn

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    "A throw-away MLflow store and working folder, and a 600-image MNIST folder in fastai's layout"
    import mlflow
    from mlopsnb.datasets import mnist_5k, write_image_folder
    tmp = tmp_path_factory.mktemp('pipelines')
    old_cwd, old_env = os.getcwd(), {k: os.environ.get(k) for k in ('MLFLOW_TRACKING_URI', 'MLOPSNB_PROGRESS')}
    os.environ.update({'MLFLOW_TRACKING_URI': f'sqlite:///{tmp}/mlflow.db', 'MLOPSNB_PROGRESS': 'none'})
    mlflow.set_tracking_uri(os.environ['MLFLOW_TRACKING_URI'])
    os.chdir(tmp)
    torch.set_num_threads(2)
    try: yield tmp, write_image_folder(mnist_5k(), tmp / 'mnist_png', n=600)
    finally:
        os.chdir(old_cwd)
        for k, v in old_env.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v


def _small_cnn(n_out=10):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, n_out))


def _run(run_id):
    import mlflow
    from mlopsnb.store import wait_for_writes
    assert wait_for_writes(timeout=60)  # the fit's figures and its run's end are written in the background
    client = mlflow.MlflowClient()
    return client.get_run(run_id), {f.path for f in client.list_artifacts(run_id)}


def _check_classifier_run(learn, folder=None):
    r, arts = _run(learn.mlflow.run_id)
    assert r.info.status == 'FINISHED'
    assert {'train_loss', 'valid_loss', 'accuracy'} <= set(r.data.metrics), r.data.metrics
    assert {'confusion_matrix.png', 'loss_curve.png'} <= arts, arts
    cm = learn.mlops.confusion_matrix
    assert cm is not None and cm.sum() == len(learn.dls.valid.dataset)
    ins = {i.dataset.name: i for i in r.inputs.dataset_inputs}
    assert {i.tags[0].value for i in ins.values()} == {'training', 'validation'}, ins
    if folder is not None:
        assert set(ins) == {'mnist_png-train', 'mnist_png-valid'}, set(ins)
        assert ins['mnist_png-train'].dataset.source_type == 'local' and str(folder / 'train') in ins['mnist_png-train'].dataset.source
    return r


def test_image_folder_mlops_learner_with_torch_loss(store):
    from fastai.vision.all import ImageDataLoaders, Normalize, Resize, accuracy, imagenet_stats
    from mlopsnb.callbacks import mlops_learner
    _, folder = store
    dls = ImageDataLoaders.from_folder(folder, item_tfms=Resize(32), batch_tfms=Normalize.from_stats(*imagenet_stats), num_workers=0, bs=64)
    learn = mlops_learner(dls, _small_cnn(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy, experiment='pipelines')
    learn.fit_one_cycle(1, 1e-2)
    r = _check_classifier_run(learn, folder)
    assert r.data.params['loss_func'] == 'CrossEntropyLoss'
    assert not (folder / 'checkpoints').exists()  # nothing written into the data folder (learn.path)


@pytest.mark.parametrize('torch_loss', [False, True])
def test_vision_learner_with_mlflow_callback(store, torch_loss):
    "fastai's own vision_learner: its default loss, or a torch loss with PlainTensorsCallback (what mlops_learner adds itself)"
    from fastai.vision.all import ImageDataLoaders, Normalize, Resize, accuracy, imagenet_stats, resnet18, vision_learner
    from mlopsnb.callbacks import MLflowCallback, PlainTensorsCallback
    _, folder = store
    dls = ImageDataLoaders.from_folder(folder, item_tfms=Resize(32), batch_tfms=Normalize.from_stats(*imagenet_stats), num_workers=0, bs=64)
    torch.manual_seed(0)
    extra = dict(loss_func=nn.CrossEntropyLoss(), cbs=[MLflowCallback(experiment='pipelines'), PlainTensorsCallback()]) if torch_loss \
        else dict(cbs=[MLflowCallback(experiment='pipelines')])
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy, **extra)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 1e-3)
    _check_classifier_run(learn, folder)


def test_datablock_with_aug_transforms(store):
    from fastai.vision.all import (CategoryBlock, DataBlock, GrandparentSplitter, ImageBlock, Normalize, Resize, accuracy,
                                   aug_transforms, get_image_files, imagenet_stats, parent_label)
    from mlopsnb.callbacks import mlops_learner
    _, folder = store
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, splitter=GrandparentSplitter(),
                      get_y=parent_label, item_tfms=Resize(32),
                      batch_tfms=[*aug_transforms(size=28, do_flip=False, max_rotate=10.), Normalize.from_stats(*imagenet_stats)])
    dls = block.dataloaders(folder, bs=64, num_workers=0)
    learn = mlops_learner(dls, _small_cnn(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy, experiment='pipelines')
    learn.fit(1, 3e-3)
    r = _check_classifier_run(learn)
    assert {i.dataset.name for i in r.inputs.dataset_inputs} == {'mnist_png-train', 'mnist_png-valid'}


def test_tabular_penguins(store):
    from fastai.tabular.all import Categorify, FillMissing, Normalize, RandomSplitter, TabularDataLoaders, TabularModel, accuracy, get_emb_sz
    from mlopsnb.callbacks import mlops_learner
    from mlopsnb.datasets import penguins
    df = penguins()
    cont = [c for c in df.columns if c != 'species' and df[c].dtype.kind == 'f']
    cat = [c for c in df.columns if c != 'species' and c not in cont]
    dls = TabularDataLoaders.from_df(df, procs=[Categorify, FillMissing, Normalize], cat_names=cat, cont_names=cont, y_names='species',
                                     splits=RandomSplitter(0.2, seed=0)(range(len(df))), bs=32, num_workers=0)
    torch.manual_seed(0)
    model = TabularModel(get_emb_sz(dls.train_ds), len(dls.cont_names), 3, [32])
    learn = mlops_learner(dls, model, metrics=accuracy, experiment='pipelines')  # fastai's default loss for the (bs, 1) targets
    learn.fit_one_cycle(3, 1e-2)
    r = _check_classifier_run(learn)
    ins = {i.dataset.name: i.dataset for i in r.inputs.dataset_inputs}
    assert set(ins) == {'table-train', 'table-valid'}, ins
    assert '"species"' in ins['table-train'].schema
    assert learn.recorder.values[-1][2] > 0.7, learn.recorder.values
