"""Notebooks as tests: run every notebook in nbs/tutorials/ and nbs/jobs/ through papermill, two at a time, with smoke
parameters (`limit`, `epochs`) where the notebook declares them. The quickstart runs with its defaults, since it
asserts its accuracy. Exits 1 naming each failed notebook and its failing cell. Usage: python tools/run_notebooks.py [NB...]"""
import subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / 'runs' / 'ci'
SMOKE = {'limit': 600, 'epochs': 1}
FULL = {'01_quickstart'}   # run with defaults: they check accuracy targets

def declared_params(nb:Path) -> set:
    import nbformat
    cells = nbformat.read(nb, as_version=4).cells
    names = set()
    for c in cells:
        if 'parameters' in c.get('metadata', {}).get('tags', []):
            for line in c.source.splitlines():
                name = line.split(':')[0].split('=')[0].strip()
                if name.isidentifier(): names.add(name)
    return names

def run(nb:Path) -> tuple[Path, int, float, str]:
    params = {} if nb.stem in FULL else {k: v for k, v in SMOKE.items() if k in declared_params(nb)}
    out = OUT / nb.relative_to(ROOT / 'nbs')
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, '-m', 'papermill', str(nb), str(out), '--cwd', str(nb.parent), '-k', 'python3', '--log-output']
    for k, v in params.items(): cmd += ['-p', k, str(v)]
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    return nb, p.returncode, time.time() - t, p.stdout + p.stderr

if __name__ == '__main__':
    nbs = [Path(a).resolve() for a in sys.argv[1:]] or sorted((ROOT / 'nbs').glob('tutorials/*.ipynb')) + sorted((ROOT / 'nbs').glob('jobs/*.ipynb'))
    failed = []
    with ThreadPoolExecutor(2) as ex:
        for nb, rc, dt, log in ex.map(run, nbs):
            name = nb.relative_to(ROOT)
            print(f"{'ok  ' if rc == 0 else 'FAIL'} {name} ({dt:.0f} s)", flush=True)
            if rc:
                failed.append(name)
                print('\n'.join(log.splitlines()[-40:]))
    print(f"{len(nbs) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)
