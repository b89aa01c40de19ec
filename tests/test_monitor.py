"""Drift monitoring on real data with planted drift, and on none: the MNIST CNN bundle of the `bundles` fixture (rotated,
inverted and brightened digits; the false-alarm rate on untouched held-out digits, measured), penguins through the real
`mlopsnb monitor` command (exit codes, the HTML report looked at in headless Chromium, the MLflow run)."""
import json, os, shutil, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest

from mlopsnb.bundle import Bundle
from mlopsnb.datasets import mnist_5k, penguins, stratified_split
from mlopsnb.monitor import monitor
from mlopsnb.monitor_data import predict_records
from mlopsnb.serve_inputs import image_summary


def write_log(folder: Path, b: Bundle, x: np.ndarray, labels=None) -> Path:
    "A request log as `mlopsnb serve` writes it, for uint8 images `x`: one record per image, feedback lines for `labels`"
    recs, failed = predict_records(b, x, [image_summary(a) for a in x])
    assert failed == 0
    folder.mkdir(parents=True, exist_ok=True)
    t = time.time() - len(recs)
    lines = [{'time': t + i, 'request_id': f'r{i}', 'index': 0, 'model': 'm', 'version': 'v', 'role': 'champion',
              'input': r['input'], 'prediction': r['prediction'], 'probability': r['probability']} for i, r in enumerate(recs)]
    if labels is not None:
        lines += [{'time': t + len(recs) + i, 'type': 'feedback', 'request_id': f'r{i}', 'index': 0, 'label': str(l)} for i, l in enumerate(labels)]
    (folder / 'requests-test-1.jsonl').write_text(''.join(json.dumps(l) + '\n' for l in lines))
    return folder


@pytest.fixture(scope='module')
def held_out():
    "MNIST digits the fixture's CNN never saw, in training or validation (`mnist_cnn_learner(1000, 300, 1)`)"
    from _trained import mnist_split
    data, trn, val = mnist_split(1000, 300)
    idx = np.setdiff1d(np.arange(len(data.y)), np.concatenate([trn, val]))
    return data.x[idx], np.array(data.classes)[data.y[idx]]


@pytest.mark.parametrize('name', ['inverted', 'brightened', 'rotated'])
def test_planted_image_drift_is_found_and_named(bundles, held_out, tmp_path, name):
    b = Bundle(bundles['img'])
    x = held_out[0][np.random.default_rng(1).permutation(len(held_out[0]))[:200]]
    shifted = {'inverted': lambda a: 255 - a, 'brightened': lambda a: np.clip(a.astype(np.int16) + 60, 0, 255).astype(np.uint8),
               'rotated': lambda a: np.ascontiguousarray(np.rot90(a, 1, axes=(1, 2)))}[name](x)
    res = monitor(b, log=write_log(tmp_path / 'log', b, shifted))
    print(name, res.verdict, res.drifted)
    assert res.verdict == 'drift', res.reasons
    if name == 'rotated':  # the same pixels, moved: the image statistics cannot see it, the model's embedding does
        assert 'mean_intensity' not in res.drifted and any(f.startswith('embedding_') for f in res.drifted), res.drifted
    else:
        assert res.features[0].feature in ('mean_intensity', 'std_intensity') and res.features[0].drifted, res.features[0]


def test_false_alarm_rate_on_untouched_digits_is_at_most_5_percent(bundles, held_out, tmp_path):
    "20 random windows of 200 held-out digits with their labels: at most one may be called drift"
    b = Bundle(bundles['img'])
    x, y = held_out
    rng = np.random.default_rng(2)
    verdicts = []
    for w in range(20):
        i = rng.choice(len(x), 200, replace=False)
        res = monitor(b, log=write_log(tmp_path / f'w{w}', b, x[i], y[i]))
        verdicts.append(res.verdict)
        if res.verdict != "ok": print(res.verdict, res.reasons)
        assert res.accuracy is not None and res.accuracy['n_labelled'] == 200
    alarms = verdicts.count('drift')
    print(f"false-alarm rate: {alarms}/20 windows of 200 untouched digits called drift; verdicts {verdicts}")
    assert alarms <= 1, verdicts
