"""Honest `--reuse`: a job that reads a file by a fixed path (not a path parameter) is reused while that file is
unchanged and re-run once it changes; the message names the files compared."""
import json, os, subprocess, sys
from pathlib import Path

BIN = Path(sys.executable).parent


def env_for(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')}
    env.update({'MPLBACKEND': 'Agg', 'MLOPSNB_DAEMON': '0'})
    return env


def write_nb(path, *cells):
    out = [{'cell_type': 'code', 'execution_count': None, 'id': f'c{i}', 'metadata': {'tags': tags}, 'outputs': [], 'source': src}
           for i, (src, tags) in enumerate(c if isinstance(c, tuple) else (c, []) for c in cells)]
    path.write_text(json.dumps({'cells': out, 'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}},
                                'nbformat': 4, 'nbformat_minor': 5}))


def mlopsnb(cwd, *args):
    return subprocess.run([str(BIN / 'mlopsnb'), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env_for(cwd), stdin=subprocess.DEVNULL)


def test_reuse_reruns_when_a_file_read_by_a_fixed_path_changes(tmp_path):
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'x.csv').write_text('a\n1\n2\n')
    (tmp_path / 'helper.py').write_text('SCALE = 10\n')
    write_nb(tmp_path / 'job.ipynb', ("scale: int = 1", ['parameters']),
             "import mlflow, helper\nrows = open('data/x.csv').read().split()[1:]\n"
             "mlflow.log_metric('total', scale * helper.SCALE * sum(map(int, rows)))\nopen('written.txt', 'w').write('an output, not an input')")
    first = mlopsnb(tmp_path, 'run', 'job.ipynb', '--reuse')
    assert first.returncode == 0 and 'job FINISHED' in first.stdout, first.stdout + first.stderr
    again = mlopsnb(tmp_path, 'run', 'job.ipynb', '--reuse')
    assert again.returncode == 0 and again.stdout.startswith('reused run'), again.stdout + again.stderr
    assert 'same notebook code, parameters, environment and 2 input files: data/x.csv, helper.py (nothing executed)' in again.stdout, again.stdout
    assert 'total=30' in again.stdout
    (tmp_path / 'data' / 'x.csv').write_text('a\n1\n5\n')  # the data changed: the earlier result is not this job's
    changed = mlopsnb(tmp_path, 'run', 'job.ipynb', '--reuse')
    assert changed.returncode == 0 and 'job FINISHED' in changed.stdout and 'reused' not in changed.stdout, changed.stdout
    now = mlopsnb(tmp_path, 'run', 'job.ipynb', '--reuse')
    assert now.stdout.startswith('reused run') and 'total=60' in now.stdout, now.stdout
    (tmp_path / 'helper.py').write_text('SCALE = 100\n')  # an imported module under the folder is an input too
    assert 'job FINISHED' in mlopsnb(tmp_path, 'run', 'job.ipynb', '--reuse').stdout
