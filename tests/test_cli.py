"""The `mlopsnb` console script as a user runs it: fast to start, light imports, the documented exit codes."""
import json, subprocess, sys
from pathlib import Path

BIN = Path(sys.executable).parent

def mlopsnb(*args, **kw):
    return subprocess.run([str(BIN / 'mlopsnb'), *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, **kw)

def test_version_and_help():
    import mlopsnb as pkg
    r = mlopsnb('--version')
    assert r.returncode == 0 and r.stdout.strip() == f'mlopsnb {pkg.__version__}'
    r = mlopsnb('--help')
    assert r.returncode == 0
    for cmd in ('run', 'params', 'runs', 'analyze', 'predict', 'launch'): assert cmd in r.stdout

def test_help_imports_nothing_heavy():
    code = ("import sys; from mlopsnb.cli import main\n"
            "try: main(['--help'])\nexcept SystemExit: pass\n"
            "import json; print(json.dumps(sorted({'torch','fastai','mlflow','pandas'} & set(sys.modules))))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []

def test_import_mlopsnb_is_light():
    r = subprocess.run([sys.executable, '-c', "import mlopsnb, sys; assert 'torch' not in sys.modules and 'mlflow' not in sys.modules"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr

def test_job_modules_import_nothing_heavy():
    # `mlopsnb run` imports these before it knows whether a job will run here or on the warm runner
    mods = ('mlopsnb.params', 'mlopsnb.kernels', 'mlopsnb.runs', 'mlopsnb.jobs', 'mlopsnb.plan', 'mlopsnb.daemon', 'mlopsnb.commands')
    code = f"import importlib, json, sys\nfor m in {mods!r}: importlib.import_module(m)\nprint(json.dumps(sorted({{'torch','fastai','mlflow'}} & set(sys.modules))))"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []

def test_usage_errors_exit_2():
    r = mlopsnb('run')
    assert r.returncode == 2 and 'notebook' in r.stderr
    r = mlopsnb('frobnicate')
    assert r.returncode == 2 and 'frobnicate' in r.stderr
