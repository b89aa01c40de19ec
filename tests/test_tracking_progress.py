"""A training notebook executed by papermill writes plain progress lines (at most 5 per epoch), never
carriage-return bars or HTML widgets: progress is detected from where the kernel runs, not from fastprogress."""

import nbformat

EPOCHS = 3
CELLS = [
    ("code", "epochs = 3", {"tags": ["parameters"]}),
    ("code", """\
import torch, torch.nn as nn
from fastai.metrics import accuracy
from mlopsnb.callbacks import mlops_learner, progress_mode
from mlopsnb.datasets import digits, stratified_split
from mlopsnb.loaders import tensor_dls, NormalizeImages
torch.set_num_threads(1)
d = digits()
trn, val = stratified_split(d.y, valid_pct=0.2, seed=0)
dls = tensor_dls(torch.from_numpy(d.x[trn]), torch.from_numpy(d.y[trn]), torch.from_numpy(d.x[val]), torch.from_numpy(d.y[val]),
                 bs=16, device='cpu', tfms=[NormalizeImages(0.3, 0.3, scale=16.)])
torch.manual_seed(0)
mode = progress_mode()""", {}),
    ("code", """\
learn = mlops_learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)), nn.CrossEntropyLoss(),
                      metrics=accuracy, lr=3e-3, tracking=False)
learn.fit_one_cycle(epochs)""", {}),
    ("code", "print('MODE', mode)", {}),
]

def test_papermill_progress_is_plain_and_throttled(tmp_path, monkeypatch):
    import papermill as pm
    for v in ('MLOPSNB_PROGRESS', 'CI', 'GITHUB_ACTIONS', 'MLFLOW_RUN_ID'): monkeypatch.delenv(v, raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src, metadata=md) for _, src, md in CELLS]
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    src, out = tmp_path / 'train.ipynb', tmp_path / 'out.ipynb'
    nbformat.write(nb, src)
    pm.execute_notebook(str(src), str(out), parameters={'epochs': EPOCHS}, kernel_name='python3', cwd=str(tmp_path),
                        progress_bar=False, log_output=False)
    res = nbformat.read(out, as_version=4)
    cells = [c for c in res.cells if c.cell_type == 'code']
    train = next(c for c in cells if 'fit_one_cycle' in c.source)
    kinds = {o.output_type for o in train.outputs}
    assert kinds <= {'stream'}, f"non-text outputs (bars/widgets?): {kinds}"
    text = ''.join(o.text for o in train.outputs if o.output_type == 'stream')
    assert '\r' not in text, "carriage-return progress bars in a papermill log"
    lines = [l for l in text.splitlines() if l.strip()]
    assert lines[0].split()[:3] == ['epoch', 'train_loss', 'valid_loss'], lines[:3]
    assert len(lines) - 1 <= 5 * EPOCHS, f"{len(lines)} progress lines for {EPOCHS} epochs:\n{text}"
    assert [l.split()[0] for l in lines[1:] if l.split()[0].isdigit()] == [str(e) for e in range(EPOCHS)]
    mode = ''.join(o.text for c in cells for o in c.outputs if o.output_type == 'stream' and 'MODE' in o.text)
    assert 'MODE plain' in mode, mode


def test_plain_fastai_learner_prints_throttled_lines_once_patched(capsys):
    "What a job kernel does through `compat.after_import('fastai.learner', ...)`: fastai's own Learner prints plain lines"
    import torch, torch.nn as nn
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    from fastcore.basics import defaults
    from mlopsnb.datasets import digits, stratified_split
    from mlopsnb.loaders import tensor_dls, NormalizeImages
    from mlopsnb.progress import FastaiPlainProgress, patch_fastai_progress
    saved = list(defaults.callbacks)
    try:
        assert patch_fastai_progress('plain') and patch_fastai_progress('plain')  # idempotent
        d = digits()
        trn, val = stratified_split(d.y, valid_pct=0.2, seed=0)
        dls = tensor_dls(torch.from_numpy(d.x[trn]), torch.from_numpy(d.y[trn]), torch.from_numpy(d.x[val]), torch.from_numpy(d.y[val]),
                         bs=64, device='cpu', tfms=[NormalizeImages(0.3, 0.3, scale=16.)])
        torch.manual_seed(0)
        learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), loss_func=nn.CrossEntropyLoss(), metrics=accuracy)
        assert isinstance(learn.progress, FastaiPlainProgress)
        capsys.readouterr()
        learn.fit(EPOCHS, 3e-3)
        lines = [l for l in capsys.readouterr().out.splitlines() if l.strip()]
    finally: defaults.callbacks[:] = saved
    assert '\r' not in ''.join(lines)
    assert lines[0].split()[:3] == ['epoch', 'train_loss', 'valid_loss'], lines
    assert [l.split()[0] for l in lines[1:]] == [str(e) for e in range(EPOCHS)], lines
