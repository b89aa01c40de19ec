"""Bundles exported from fastai's own vision `DataLoaders` (`ImageDataLoaders.from_folder`, a `DataBlock` with a padding
`Resize` and `aug_transforms`, `vision_learner`): the bundle runtime, fed image *files*, must do what fastai's `test_dl`
and `learn.predict` do on the same files, where torch and fastai cannot even be imported."""
import argparse, contextlib, io, json, subprocess, sys, textwrap, warnings
from pathlib import Path

import numpy as np
import pytest

from mlopsnb.bundle import load_bundle, predict_command

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isolation import blocked_imports_prelude  # noqa: E402


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    from mlopsnb.datasets import write_image_folder, mnist_5k
    return write_image_folder(mnist_5k(), tmp_path_factory.mktemp('png') / 'mnist', n=600)


def _fit(learn):
    with learn.no_logging(), learn.no_bar(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit_one_cycle(1, 1e-2)
    return learn


@pytest.fixture(scope='module')
def rgb(folder, tmp_path_factory):
    "The fastai tutorial way: ImageDataLoaders.from_folder, Resize(32), imagenet Normalize, a small CNN, 1 epoch"
    import torch, torch.nn as nn
    from fastai.vision.all import ImageDataLoaders, Resize, Normalize, imagenet_stats, Learner, CrossEntropyLossFlat, accuracy
    from mlopsnb.export import export_bundle
    torch.manual_seed(0)
    dls = ImageDataLoaders.from_folder(folder, item_tfms=Resize(32), batch_tfms=Normalize.from_stats(*imagenet_stats), num_workers=0, bs=64)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(32, 10))
    learn = _fit(Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy))
    bundle = export_bundle(learn, tmp_path_factory.mktemp('b') / 'rgb', dynamo=False)
    return learn, bundle


def _files(folder, n=None):
    files = sorted((folder / 'valid').rglob('*.png'))
    return files[:n] if n else files


def _predict_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = predict_command(argparse.Namespace(bundle=str(argv[0]), inputs=[str(a) for a in argv[1:]], json=True, verify=True))
    return rc, out.getvalue(), err.getvalue()


def test_raw_file_parity_with_test_dl(rgb, folder):
    learn, bundle = rgb
    spec = json.loads((bundle / 'bundle.json').read_text())
    assert spec['parity']['inputs'] == 'files' and spec['parity']['max_abs_diff'] <= 1e-4, spec['parity']
    assert spec['input']['resize'] == {'method': 'crop', 'pad_mode': 'reflection', 'resample': 'bilinear'}
    files = _files(folder)
    ref = learn.get_preds(dl=learn.dls.test_dl(files, num_workers=0))[0].numpy()
    got = load_bundle(bundle).predict_proba(files)
    diff = float(np.abs(got - ref).max())
    print(f"raw-file parity on {len(files)} validation files: max abs diff of probabilities {diff:.3g}")
    assert diff <= 1e-4
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_predict_verify_gives_fastai_prediction(rgb, folder):
    "`mlopsnb predict BUNDLE some.png --verify` says what `learn.predict(some.png)` says"
    learn, bundle = rgb
    for f in _files(folder)[::15]:
        with learn.no_bar(): label, idx, probs = learn.predict(f)
        rc, out, err = _predict_cli(bundle, f)
        assert rc == 0, err
        r = json.loads(out)
        assert r['verify']['ok'] and r['predictions'][0]['prediction'] == str(label)
        assert abs(r['predictions'][0]['probability'] - float(probs[idx])) <= 1e-4


def test_datablock_grayscale_pad_and_augmentations(folder, tmp_path):
    "PILImageBW items, a non-square padding Resize with zeros, aug_transforms (dropped: training only)"
    import torch, torch.nn as nn
    from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, PILImageBW, Resize, aug_transforms, get_image_files,
                                   GrandparentSplitter, parent_label, Learner, CrossEntropyLossFlat)
    from mlopsnb.export import export_bundle
    torch.manual_seed(0)
    block = DataBlock(blocks=(ImageBlock(cls=PILImageBW), CategoryBlock), get_items=get_image_files, splitter=GrandparentSplitter(),
                      get_y=parent_label, item_tfms=Resize((24, 30), method='pad', pad_mode='zeros'), batch_tfms=aug_transforms())
    dls = block.dataloaders(folder, num_workers=0, bs=64)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    learn = _fit(Learner(dls, model, loss_func=CrossEntropyLossFlat()))
    b = load_bundle(export_bundle(learn, tmp_path / 'bw', dynamo=False))
    i = b.spec['input']
    assert (i['pil_mode'], i['channels'], i['height'], i['width'], i['resize']['method'], i['resize']['pad_mode']) == ('L', 1, 24, 30, 'pad', 'zeros')
    assert [s['type'] for s in b.spec['preprocessing']] == ['int_to_float']
    files = _files(folder)
    ref = learn.get_preds(dl=dls.test_dl(files, num_workers=0))[0].numpy()
    assert float(np.abs(b.predict_proba(files) - ref).max()) <= 1e-4


def test_vision_learner_squish(folder, tmp_path):
    "vision_learner(resnet18, pretrained=False) with Resize(28, method='squish')"
    import torch
    from fastai.vision.all import ImageDataLoaders, Resize, Normalize, imagenet_stats, vision_learner, resnet18
    from mlopsnb.export import export_bundle
    torch.manual_seed(0)
    dls = ImageDataLoaders.from_folder(folder, item_tfms=Resize(28, method='squish'), batch_tfms=Normalize.from_stats(*imagenet_stats),
                                       num_workers=0, bs=64)
    learn = _fit(vision_learner(dls, resnet18, pretrained=False))
    # One epoch on 600 files leaves resnet18's logits in the tens to hundreds; onnxruntime and torch sum its 20 convs in
    # another order (which varies with threads and load), so fp32 logits differ by up to ~1e-3 (seen: 1.3e-3). Softmax
    # moves a probability by at most half the largest logit difference, so probabilities agree to 1e-3 (seen: 2.1e-4 under
    # load; a 1e-4 bound failed there), and the predicted classes must be the same. Preprocessing must still be exact.
    b = load_bundle(export_bundle(learn, tmp_path / 'resnet', dynamo=False, n_parity=8, atol=5e-3, rtol=1e-4))
    assert b.spec['parity']['max_abs_diff_preprocessed'] == 0.0  # the runtime's preprocessing is fastai's, bit for bit
    files = _files(folder, 40)
    ref = learn.get_preds(dl=dls.test_dl(files, num_workers=0))[0].numpy()
    assert b.spec['input']['resize']['method'] == 'squish' and b.spec['classes'] == list(dls.vocab)
    proba = b.predict_proba(files)
    assert float(np.abs(proba - ref).max()) <= 1e-3 and (proba.argmax(1) == ref.argmax(1)).all()


def test_unsupported_transform_is_named(folder, rgb, tmp_path):
    from fastai.vision.all import ImageDataLoaders, RandomResizedCrop, Learner, CrossEntropyLossFlat
    from mlopsnb.errors import BundleError
    from mlopsnb.export import export_bundle
    dls = ImageDataLoaders.from_folder(folder, item_tfms=RandomResizedCrop(32), num_workers=0, bs=64)
    with pytest.raises(BundleError, match='item transform RandomResizedCrop'):
        export_bundle(Learner(dls, rgb[0].model, loss_func=CrossEntropyLossFlat()), tmp_path / 'x', dynamo=False)
    assert not (tmp_path / 'x').exists()


def test_files_predict_without_torch_or_fastai(rgb, folder, tmp_path):
    learn, bundle = rgb
    files = [str(f) for f in _files(folder, 6)]
    want = load_bundle(bundle).predict(files).tolist()
    script = blocked_imports_prelude() + textwrap.dedent(f'''
        import json, sys
        from mlopsnb.bundle import load_bundle
        b = load_bundle({str(bundle)!r})
        print(json.dumps({{'pred': b.predict({files!r}).tolist(), 'verify': b.verify()['ok'],
                          'loaded': sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'fastai'))}}))
    ''')
    r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert out == {'pred': want, 'verify': True, 'loaded': []}


def test_wrong_kind_of_input_is_explained(rgb, folder, tmp_path):
    "An image bundle given a CSV: exit 2, strict JSON error saying what was given and what the bundle takes"
    (tmp_path / 'rows.csv').write_text('a,b\n1,2\n')
    rc, out, err = _predict_cli(rgb[1], tmp_path / 'rows.csv')
    assert rc == 2, (rc, out, err)
    r = json.loads(out.splitlines()[-1], parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert 'a CSV of table rows' in r['error'] and 'RGB images of 32x32' in r['error'] and r['input'] == [str(tmp_path / 'rows.csv')]
