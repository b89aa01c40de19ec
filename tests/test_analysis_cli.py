"`mlopsnb analyze` end to end in a subprocess: tables, image folders with bad files, exit code 2 on bad input, light import."
import json, subprocess, sys

import numpy as np
import pytest

CLI = [sys.executable, '-c', 'import sys; from mlopsnb.cli import main; sys.exit(main())']


def run(*args, cwd=None):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**__import__('os').environ, 'MPLBACKEND': 'Agg'})


@pytest.fixture(scope='module')
def penguins_csv(tmp_path_factory):
    from mlopsnb.datasets import penguins
    p = tmp_path_factory.mktemp('data') / 'penguins.csv'
    penguins().to_csv(p, index=False)
    return p


def test_analyze_csv_writes_report(penguins_csv, tmp_path):
    out = tmp_path / 'rep'
    r = run('analyze', penguins_csv, '--target', 'species', '--out', out)
    assert r.returncode == 0, r.stderr
    assert '344 rows × 8 columns' in r.stdout and 'report written to' in r.stdout
    names = {p.name for p in out.iterdir()}
    assert {'report.html', 'stats.json', 'missing.png', 'distributions.png', 'correlation.png', 'target.png'} <= names
    stats = json.loads((out / 'stats.json').read_text())
    assert stats['target_balance']['counts'] == {'Adelie': 152, 'Chinstrap': 68, 'Gentoo': 124}
    assert 'src="missing.png"' in (out / 'report.html').read_text()


def test_analyze_parquet_default_out(penguins_csv, tmp_path):
    import pandas as pd
    pq = tmp_path / 'peng.parquet'
    pd.read_csv(penguins_csv).to_parquet(pq)
    r = run('analyze', pq, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / 'peng_analysis' / 'report.html').exists()


def test_analyze_image_folder_lists_bad_files(tmp_path):
    from PIL import Image
    root = tmp_path / 'imgs'
    rng = np.random.default_rng(0)
    for cls in ('a', 'b'):
        (root / cls).mkdir(parents=True)
        for i in range(5): Image.fromarray(rng.integers(0, 255, (12, 10), dtype=np.uint8)).save(root / cls / f'{i}.png')
    raw = (root / 'b' / '4.png').read_bytes(); (root / 'b' / '4.png').write_bytes(raw[: len(raw) // 2])
    (root / 'a' / 'labels.txt').write_text('hello')
    r = run('analyze', root, '--out', tmp_path / 'out')
    assert r.returncode == 0, r.stderr
    assert 'could not be decoded' in r.stdout
    stats = json.loads((tmp_path / 'out' / 'stats.json').read_text())
    assert sorted(f['path'] for f in stats['failed']) == ['a/labels.txt', 'b/4.png']
    assert stats['n_images'] == 9 and stats['class_counts'] == {'a': 5, 'b': 4}
    assert (tmp_path / 'out' / 'samples.png').exists()


def test_missing_file_exit_2(tmp_path):
    r = run('analyze', tmp_path / 'nope.csv')
    assert r.returncode == 2 and 'no such file or folder' in r.stderr and 'nope.csv' in r.stderr


def test_missing_column_exit_2(penguins_csv):
    r = run('analyze', penguins_csv, '--target', 'wingspan')
    assert r.returncode == 2 and "column 'wingspan' not in penguins.csv" in r.stderr


def test_unsupported_file_exit_2(tmp_path):
    p = tmp_path / 'data.xlsx'; p.write_bytes(b'x')
    r = run('analyze', p)
    assert r.returncode == 2 and "don't know how to read 'data.xlsx'" in r.stderr


def test_import_is_light():
    code = ("import sys, mlopsnb.analysis, mlopsnb.validation, mlopsnb.labeling; "
            "print(sorted(m for m in ('matplotlib', 'scipy', 'torch', 'fastai', 'mlflow', 'ipywidgets', 'PIL', 'sklearn') if m in sys.modules))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '[]'
