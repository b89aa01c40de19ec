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
    for cmd in ('run', 'params', 'runs', 'analyze', 'predict', 'launch', 'promote', 'monitor'): assert cmd in r.stdout

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


# --- usage errors before any kernel, and the runs listing (issue 16's smaller things) ---
import os

REPO = Path(__file__).resolve().parents[1]
NBS = REPO / 'tests' / 'notebooks'


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')}
    env.update({'MPLBACKEND': 'Agg', 'MLOPSNB_DAEMON': '0'})
    return env


def test_duplicate_param_and_bad_param_files_are_usage_errors(tmp_path):
    env = _env(tmp_path)
    r = mlopsnb('run', str(NBS / 'metrics.ipynb'), '-p', 'lr', '0.1', '-p', 'lr', '0.2', cwd=tmp_path, env=env)
    assert r.returncode == 2 and "-p lr is given more than once ('0.1', then '0.2')" in r.stderr, r.stderr
    for i, text in enumerate(['[1, 2]', '42']):
        (tmp_path / f'bad{i}.yaml').write_text(text)
        r = mlopsnb('run', str(NBS / 'metrics.ipynb'), '-f', f'bad{i}.yaml', cwd=tmp_path, env=env)
        assert r.returncode == 2 and 'must hold a mapping of parameter names to values' in r.stderr, r.stderr
    assert not (tmp_path / 'runs').exists() and not (tmp_path / 'mlflow.db').exists()  # no kernel, no run
    (tmp_path / 'empty.yaml').write_text('{}')
    (tmp_path / 'blank.yaml').write_text('')
    r = mlopsnb('run', str(NBS / 'metrics.ipynb'), '-f', 'empty.yaml', '-f', 'blank.yaml', '-p', 'steps', '2', cwd=tmp_path, env=env)
    assert r.returncode == 0 and 'job FINISHED' in r.stdout, r.stdout + r.stderr


def test_runs_lists_params_and_last_metric_and_survives_a_closed_pipe(tmp_path):
    env = _env(tmp_path)
    for lr in ('0.1', '0.2'):
        assert mlopsnb('run', str(NBS / 'metrics.ipynb'), '-p', 'lr', lr, '-p', 'steps', '3', cwd=tmp_path, env=env).returncode == 0
    r = mlopsnb('runs', cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    head, _, *rows = r.stdout.splitlines()
    assert 'params' in head and 'last metric' in head
    assert any('lr=0.2 bs=64 arch=a steps=3' in row and 'score=12.8' in row for row in rows), r.stdout  # score is logged after curve
    for args in (['runs', '--json'], ['runs']):
        p = subprocess.run(f"'{BIN / 'mlopsnb'}' {' '.join(args)} | head -1", shell=True, cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert p.stdout.strip() and 'Traceback' not in p.stderr and 'BrokenPipeError' not in p.stderr, p.stderr


def test_runs_data_lists_the_runs_that_used_a_dataset(tmp_path):
    env = _env(tmp_path)
    (tmp_path / 'd.csv').write_text('a\n1\n')
    nb = {'cells': [{'cell_type': 'code', 'execution_count': None, 'id': 'p', 'metadata': {'tags': ['parameters']}, 'outputs': [],
                     'source': "data: str = 'd.csv'"}, {'cell_type': 'code', 'execution_count': None, 'id': 'b', 'metadata': {}, 'outputs': [],
                     'source': "print(open(data).read())"}], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    (tmp_path / 'uses.ipynb').write_text(json.dumps(nb))
    assert mlopsnb('run', 'uses.ipynb', cwd=tmp_path, env=env).returncode == 0
    assert mlopsnb('run', str(NBS / 'metrics.ipynb'), '-p', 'steps', '1', cwd=tmp_path, env=env).returncode == 0
    listed = json.loads(mlopsnb('runs', '--json', cwd=tmp_path, env=env).stdout)
    fp = next(r['tags']['mlopsnb.data_fingerprint'] for r in listed if r['experiment'] == 'uses')
    r = mlopsnb('runs', '--data', fp[:12], '--json', cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    (only,) = json.loads(r.stdout)
    assert only['experiment'] == 'uses' and only['logged_models'] == []
    r = mlopsnb('runs', '--data', fp[:12], cwd=tmp_path, env=env)
    assert 'uses' in r.stdout and 'metrics' not in r.stdout.split('\n', 2)[2] and 'models' in r.stdout.splitlines()[0]
    assert mlopsnb('runs', '--data', '0' * 32, cwd=tmp_path, env=env).stdout.startswith('no runs used data')
