"""The slim install: `pip install mlopsnb` (no extras) into a clean venv predicts and serves with a model bundle on
numpy + onnxruntime + FastAPI, stays small, and leaves the training stack out; a training command or module there names
the extra to install. The bundle is conftest's `bundles` (a briefly trained MNIST CNN), exported with torch in this process."""
import os, shutil, signal, socket, subprocess, sys, textwrap, time, urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_VENV_MB = 300  # numpy + onnxruntime + Pillow + FastAPI/uvicorn, with pip itself: about 220 MB (the full install: 6-7 GB)
TRAINING_PACKAGES = ('torch', 'fastai', 'mlflow')


def _bin(venv: Path, name: str) -> str: return str(venv / 'bin' / name)


def _run(argv, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)


def _build_wheel(out: Path) -> Path:
    "A wheel of this checkout, built from a copy of its sources (an in-tree build/ could hold modules since deleted)"
    src = out / 'src'
    shutil.copytree(ROOT / 'mlopsnb', src / 'mlopsnb', ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    for f in ('pyproject.toml', 'README.md'): shutil.copy2(ROOT / f, src / f)
    r = _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', out / 'wheels', src])
    assert r.returncode == 0, r.stderr[-3000:]
    return next((out / 'wheels').glob('mlopsnb-*.whl'))


def _du_mb(path: Path) -> float:
    "Disk usage of a folder in MiB, as `du -sm` counts it (allocated blocks, each hard-linked file once)"
    seen, total = set(), 0
    for d, _, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(d, f))
            if (st.st_dev, st.st_ino) in seen: continue
            seen.add((st.st_dev, st.st_ino)); total += st.st_blocks * 512
    return total / 2**20


def _distribution_sizes(venv: Path) -> list[tuple[str, float]]:
    "(distribution, MiB) for every package in the venv, largest first, from each one's RECORD of installed files"
    site = next(venv.glob('lib/python*/site-packages'))
    sizes = []
    for rec in site.glob('*.dist-info/RECORD'):
        files = {(site / line.split(',')[0]).resolve() for line in rec.read_text().splitlines() if line.strip()}
        sizes.append((rec.parent.name.split('-')[0], sum(f.stat().st_size for f in files if f.is_file()) / 2**20))
    return sorted(sizes, key=lambda t: -t[1])


@pytest.fixture(scope='module')
def slim(tmp_path_factory):
    "A fresh venv with `pip install mlopsnb` from a wheel of this checkout: no extras"
    d = tmp_path_factory.mktemp('slim')
    wheel = _build_wheel(d)
    venv = d / 'venv'
    r = _run([sys.executable, '-m', 'venv', venv])
    assert r.returncode == 0, r.stderr
    r = _run([_bin(venv, 'python'), '-m', 'pip', 'install', '-q', '--disable-pip-version-check', wheel], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return venv


@pytest.fixture(scope='module')
def digit(bundles, tmp_path_factory):
    "A validation digit as a PNG file, and the class torch predicted for it"
    from PIL import Image
    png = tmp_path_factory.mktemp('digit') / 'digit.png'
    Image.fromarray(bundles['x_val'][0]).save(png)
    return png, str(bundles['img_pred'][0])


@pytest.mark.slow
def test_slim_venv_is_small_without_the_training_stack(slim):
    mb, sizes = _du_mb(slim), _distribution_sizes(slim)
    print(f"\nslim venv: {mb:.0f} MiB; " + ', '.join(f"{n} {s:.1f}" for n, s in sizes))
    assert mb <= MAX_VENV_MB, f"the slim venv takes {mb:.0f} MiB (at most {MAX_VENV_MB}): " + ', '.join(f"{n} {s:.0f}" for n, s in sizes[:10])
    for pkg in TRAINING_PACKAGES:
        r = _run([_bin(slim, 'python'), '-c', f'import {pkg}'])
        assert r.returncode != 0 and f"No module named '{pkg}'" in r.stderr, (pkg, r.stderr[-500:])


@pytest.mark.slow
def test_slim_training_imports_name_the_extra(slim, tmp_path):
    "A training module or command in the slim install says which `pip install` brings what it needs, exit code 2"
    r = _run([_bin(slim, 'python'), '-c', 'import mlopsnb.callbacks'])
    assert "MissingExtraError: mlopsnb.callbacks needs torch and fastai, which the slim install leaves out: pip install 'mlopsnb[train]'" in r.stderr, r.stderr
    (tmp_path / 'x.csv').write_text('a,b\n1,2\n')
    r = _run([_bin(slim, 'mlopsnb'), 'analyze', tmp_path / 'x.csv'], cwd=tmp_path)
    assert (r.returncode, r.stderr.strip()) == (2, "mlopsnb analyze needs pandas, which the slim install leaves out: pip install 'mlopsnb[train]'")


@pytest.mark.slow
def test_slim_predict_matches_torch(slim, bundles, digit):
    png, expected = digit
    r = _run([_bin(slim, 'mlopsnb'), 'predict', bundles['img'], png, '--verify'], cwd=png.parent)
    assert r.returncode == 0, r.stderr
    verify, line = r.stdout.strip().splitlines()
    assert verify.startswith('verify: ok'), verify
    name, predicted, proba = line.split('\t')
    assert (Path(name).name, predicted) == ('digit.png', expected) and 0 < float(proba) <= 1, r.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_slim_serve_answers_like_predict(slim, bundles, digit, tmp_path):
    "`mlopsnb serve BUNDLE` from the slim venv: ready within 60 s, and a PNG upload predicts what `mlopsnb predict` printed"
    import httpx
    if 'serve' not in _run([_bin(slim, 'mlopsnb'), '--help']).stdout.split('COMMAND ...', 1)[-1]:
        pytest.skip('`mlopsnb serve` is not a subcommand yet (not listed by `mlopsnb --help`)')
    r = _run([_bin(slim, 'mlopsnb'), 'serve', '--help'])
    assert r.returncode == 0, r.stderr
    png, _ = digit
    r = _run([_bin(slim, 'mlopsnb'), 'predict', bundles['img'], png], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    printed = r.stdout.strip().split('\t')[1]
    port = _free_port()
    proc = subprocess.Popen([_bin(slim, 'mlopsnb'), 'serve', str(bundles['img']), '--port', str(port)], cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f'http://127.0.0.1:{port}'
    try:
        t0 = time.time()
        while True:
            assert proc.poll() is None, f"mlopsnb serve exited with {proc.returncode}: {proc.stdout.read()[-3000:]}"
            try:
                with urllib.request.urlopen(f'{url}/ready', timeout=2) as resp:
                    if resp.status == 200: break
            except OSError: pass
            assert time.time() - t0 < 60, 'mlopsnb serve was not ready within 60 s'
            time.sleep(0.2)
        resp = httpx.post(f'{url}/predict', files={'file': ('digit.png', png.read_bytes(), 'image/png')}, timeout=30)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        got = body['prediction'] if 'prediction' in body else body['predictions'][0]['prediction']
        assert str(got) == printed, body
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try: proc.wait(15)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()
        proc.stdout.close()


def test_cli_names_the_extra_for_a_missing_package(tmp_path):
    "Without the training stack (blocked here), a command says which extra to install: at its import or inside it"
    def cli(blocked, *argv):
        code = textwrap.dedent(f"""
            import sys
            for name in {list(blocked)!r}: sys.modules[name] = None
            from mlopsnb.cli import main
            sys.exit(main({list(argv)!r}))""")
        return _run([sys.executable, '-c', code], timeout=120, cwd=tmp_path, env={**os.environ, 'MLFLOW_TRACKING_URI': f'sqlite:///{tmp_path}/m.db'})
    r = cli(['pandas'], 'analyze', 'x.csv')
    assert (r.returncode, r.stderr.strip()) == (2, "mlopsnb analyze needs pandas, which the slim install leaves out: pip install 'mlopsnb[train]'")
    r = cli(['mlflow'], 'runs')  # mlflow is imported inside the command
    assert (r.returncode, r.stderr.strip()) == (2, "mlopsnb runs needs mlflow, which the slim install leaves out: pip install 'mlopsnb[train]'")
