"""Write README.md from nbs/index.ipynb without Quarto: nbconvert to Markdown, `#|` directive lines removed,
`#| hide` cells and their outputs dropped. Usage: python tools/make_readme.py [--check]"""
import sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parent.parent

def render() -> str:
    nb = nbformat.read(ROOT / 'nbs' / 'index.ipynb', as_version=4)
    cells = []
    for c in nb.cells:
        lines = c.source.splitlines()
        if c.cell_type == 'code' and any(l.strip().replace(' ', '') in ('#|hide', '#|export', '#|exporti') for l in lines): continue
        c.source = '\n'.join(l for l in lines if not l.lstrip().startswith('#|')).strip('\n')
        if c.source: cells.append(c)
    nb.cells = cells
    nb.metadata['language_info'] = {'name': 'python'}  # fenced code blocks get a language
    body, _ = MarkdownExporter().from_notebook_node(nb)
    body = body.lstrip()
    return body.rstrip() + '\n'

if __name__ == '__main__':
    text = render()
    out = ROOT / 'README.md'
    if '--check' in sys.argv:
        if not out.exists() or out.read_text() != text: sys.exit('README.md is out of date: run `make readme`')
    else: out.write_text(text)
