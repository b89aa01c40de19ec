"""Test helper: run Python where some packages cannot be imported, to prove a code path does not need them."""
from typing import Sequence

_BLOCKER = '''
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}: raise ImportError(f"blocked import of {{name}}")
        return None
sys.meta_path.insert(0, _Block())
'''


def blocked_imports_prelude(blocked: Sequence[str] = ('torch', 'fastai')) -> str:
    "Python source that makes importing `blocked` packages fail; prepend it to a subprocess script to prove independence"
    return _BLOCKER.format(blocked=set(blocked))
