"""Render the notebooks to HTML under docs/: Quarto (nbdev-docs) when it is installed, nbconvert otherwise."""
import shutil, subprocess, sys
from pathlib import Path
import nbformat
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
if shutil.which('quarto'): sys.exit(subprocess.call([str(Path(sys.executable).parent / 'nbdev-docs')], cwd=ROOT))
out = ROOT / 'docs'; out.mkdir(exist_ok=True)
pages = []
for nb in sorted((ROOT / 'nbs').rglob('*.ipynb')):
    if '.ipynb_checkpoints' in nb.parts: continue
    rel = nb.relative_to(ROOT / 'nbs').with_suffix('.html')
    node = nbformat.read(nb, as_version=4)
    for c in node.cells: c.source = '\n'.join(l for l in c.source.splitlines() if not l.lstrip().startswith('#|'))
    html, _ = HTMLExporter(template_name='lab').from_notebook_node(node)
    (out / rel).parent.mkdir(parents=True, exist_ok=True); (out / rel).write_text(html)
    pages.append(rel.as_posix())
links = '\n'.join(f'<li><a href="{p}">{p[:-5]}</a></li>' for p in pages)
# index.html is the README page (nbs/index.ipynb); pages.html lists every page
(out / 'pages.html').write_text(f'<!doctype html><title>mlopsnb pages</title><h1>mlopsnb</h1><ul>{links}</ul>')
print(f'{len(pages)} pages written to {out}')
