"The architecture check that `make test` runs must be able to fail: a circle, a private import, a long cell."
import importlib.util, json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('check_architecture', ROOT / 'tools' / 'check_architecture.py')
arch = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(arch)


def test_finds_import_circles():
    assert arch.cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
    assert arch.cycles({'a': {'b'}, 'b': set()}) == []


def test_finds_private_and_lazy_imports(tmp_path):
    f = tmp_path / 'daemon.py'
    f.write_text("from .jobs import run_command, _start_kernel\n"
                 "def later():\n    from mlopsnb.kernels import start_kernel\n    import mlopsnb.store\n")
    mods, private = arch.imports(f)
    assert mods == {'jobs', 'kernels', 'store'}  # imports inside functions count
    assert private == ['daemon.py:1 imports _start_kernel from mlopsnb.jobs']


def test_counts_cell_lines(tmp_path):
    nb = tmp_path / 'x.ipynb'
    nb.write_text(json.dumps({'cells': [{'cell_type': 'code', 'source': ['a = 1\n'] * 61},
                                        {'cell_type': 'markdown', 'source': ['text\n'] * 99}]}))
    assert [(i, len(s.splitlines())) for i, s in arch.notebook_cells(nb)] == [(0, 61)]


def test_finds_undeclared_extra_imports(tmp_path):
    "A module-level import of the training stack must be declared by `require_extra` first; lazy imports need not be"
    f = tmp_path / 'callbacks.py'
    f.write_text("from __future__ import annotations\n"
                 "from .errors import require_extra; require_extra(__name__, 'torch')\n"
                 "import numpy as np\nimport torch\nfrom fastai.learner import Learner\nimport fastai.callback.core\n"
                 "def later():\n    import mlflow\n")
    assert arch.undeclared_extras(f) == ["callbacks.py:5 imports fastai (the `train` extra) without `require_extra(__name__, ..., 'fastai')` before it"]
