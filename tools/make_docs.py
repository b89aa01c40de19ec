"""Render the notebooks to HTML under docs/, with results: the tutorials are executed first, so their pages show the
numbers and plots they produce. Quarto (nbdev-docs) renders when it is installed; nbconvert otherwise.

The tutorials run through `mlopsnb run` (the same path as `make test`), in a temporary folder with a throwaway MLflow
store, without the warm runner (`MLOPSNB_DAEMON=0`) and with matplotlib's inline backend, so figures become embedded
PNGs. A tutorial that fails makes the whole command fail: docs never show a stale or broken result.
The module notebooks are rendered as they are stored (nbdev-clean strips outputs; their tests run in `make test`).
Usage: python tools/make_docs.py [--no-exec]"""
import os, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS, BIN = ROOT / 'nbs', Path(sys.executable).parent
EXECUTED = ('tutorials',)  # folders of nbs/ whose notebooks are executed before rendering
sys.path.insert(0, str(ROOT / 'tools'))
from make_readme import fill  # noqa: E402  (index.ipynb's generated module table and architecture)


def execute(folder: str, work: Path) -> dict[str, Path]:
    "Run every notebook of nbs/<folder> with `mlopsnb run` under `work`; returns {notebook stem: executed notebook}"
    out = work / 'runs' / folder
    env = {**os.environ, 'MLOPSNB_DAEMON': '0', 'MLFLOW_TRACKING_URI': f"sqlite:///{work / 'mlflow.db'}",
           'MPLBACKEND': 'module://matplotlib_inline.backend_inline'}
    for k in ('MLOPSNB_SMOKE', 'MLFLOW_RUN_ID', 'MLOPSNB_RUN_ID'): env.pop(k, None)  # full runs, each in its own new run
    r = subprocess.run([str(BIN / 'mlopsnb'), 'run', str(NBS / folder), '--out', str(out)], cwd=work, env=env)
    if r.returncode: sys.exit(f"make_docs: executing nbs/{folder} failed (exit {r.returncode}); see the output above")
    found = {}
    for nb in sorted(out.rglob('*.ipynb')):
        stem = next((s.stem for s in (NBS / folder).glob('*.ipynb') if nb.name.startswith(s.stem)), None)
        if stem: found.setdefault(stem, nb)
    missing = sorted({s.stem for s in (NBS / folder).glob('*.ipynb')} - set(found))
    if missing: sys.exit(f"make_docs: no executed notebook for {missing} under {out}")
    return found


def render(src: Path, dst: Path, executed: Path | None = None) -> None:
    "Write `src` (or its executed copy) as an HTML page at `dst`, `#|` directives removed, images embedded"
    import nbformat
    from nbconvert import HTMLExporter
    node = nbformat.read(executed or src, as_version=4)
    for c in node.cells:
        c.source = '\n'.join(l for l in c.source.splitlines() if not l.lstrip().startswith('#|'))
        if c.cell_type == 'markdown' and src.name == 'index.ipynb': c.source = fill(c.source)
    html, _ = HTMLExporter(template_name='lab', embed_images=True).from_notebook_node(node)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(html)


def main() -> int:
    if shutil.which('quarto'): return subprocess.call([str(BIN / 'nbdev-docs')], cwd=ROOT)
    out = ROOT / 'docs'; out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='mlopsnb-docs-') as work:
        executed = {}
        if '--no-exec' not in sys.argv:
            for folder in EXECUTED:
                executed.update({f"{folder}/{k}": v for k, v in execute(folder, Path(work)).items()})
        pages = []
        for nb in sorted(NBS.rglob('*.ipynb')):
            rel = nb.relative_to(NBS)
            if any(p.startswith(('.', '_')) for p in rel.parts) or rel.parts[0] in ('runs', 'mlruns'): continue
            render(nb, out / rel.with_suffix('.html'), executed.get(rel.with_suffix('').as_posix()))
            pages.append(rel.with_suffix('.html').as_posix())
    links = '\n'.join(f'<li><a href="{p}">{p[:-5]}</a></li>' for p in pages)
    # index.html is the README page (nbs/index.ipynb); pages.html lists every page
    (out / 'pages.html').write_text(f'<!doctype html><title>mlopsnb pages</title><h1>mlopsnb</h1><ul>{links}</ul>')
    print(f"{len(pages)} pages written to {out} ({len(executed)} executed: {', '.join(sorted(executed)) or 'none'})")
    return 0


if __name__ == '__main__':
    sys.exit(main())
