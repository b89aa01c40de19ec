"""Write README.md from nbs/index.ipynb without Quarto: nbconvert to Markdown, `#|` directive lines removed,
`#| hide` cells and their outputs dropped, and the placeholders of index.ipynb filled from the notebooks themselves:

- `<!-- mlopsnb:modules -->`: the module table (notebook, module, the `> summary` line of its first markdown cell),
  then the tutorials and jobs with their titles;
- `<!-- mlopsnb:architecture -->`: which module owns what, stage by stage in data-flow order, what each imports,
  where the job context and the Learner state are documented.

So the README map cannot drift from the code: `python tools/make_readme.py --check` (run by `make test`) fails when
README.md differs from what the notebooks say. Usage: python tools/make_readme.py [--check]"""
import ast, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS, PKG = ROOT / 'nbs', ROOT / 'mlopsnb'
MODULES_MARK, ARCH_MARK = '<!-- mlopsnb:modules -->', '<!-- mlopsnb:architecture -->'
# The tens digit of a notebook's number is its stage; stages are listed in the order data flows through them.
STAGES = {0: 'Foundation: shared contracts, data and loaders', 1: 'Data analysis and validation', 2: 'Training',
          3: 'Export and serving', 4: 'Jobs', 5: 'Command line'}


def _cells(nb: Path) -> list[dict]:
    cells = json.loads(nb.read_text()).get('cells', [])
    return [{'type': c['cell_type'], 'source': ''.join(c['source']) if isinstance(c['source'], list) else c['source']} for c in cells]


def notebook_info(nb: Path) -> dict:
    "Title (`# name`), summary (the `> ...` lines) and module (`#| default_exp`) of a notebook"
    cells = _cells(nb)
    md = next((c['source'] for c in cells if c['type'] == 'markdown'), '')
    lines = md.splitlines()
    title = next((l[2:].strip() for l in lines if l.startswith('# ')), nb.stem)
    summary, started = [], False
    for l in lines:
        if l.startswith('>'): summary.append(l.lstrip('>').strip()); started = True
        elif started: break
    module = next((m.group(1) for c in cells if c['type'] == 'code' for m in [re.search(r'^#\|\s*default_exp\s+(\S+)', c['source'], re.M)] if m), None)
    return {'path': nb, 'title': title, 'summary': ' '.join(summary), 'module': module}


def module_notebooks() -> list[dict]:
    "Every numbered notebook that exports a module, in number order"
    infos = [notebook_info(nb) for nb in sorted(NBS.glob('[0-9][0-9]_*.ipynb'))]
    return [i for i in infos if i['module']]


def module_imports(module: str) -> list[str]:
    "The mlopsnb modules that the generated `mlopsnb/<module>.py` imports (anywhere in it)"
    f = PKG / f"{module}.py"
    if not f.exists(): return []
    found = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level and node.module: found.add(node.module.split('.')[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('mlopsnb.'): found.add(node.module.split('.')[1])
        elif isinstance(node, ast.Import): found |= {a.name.split('.')[1] for a in node.names if a.name.startswith('mlopsnb.')}
    found.discard(module)
    return sorted(m for m in found if (PKG / f"{m}.py").exists())


def module_table() -> str:
    rows = ['| notebook | module | what it holds |', '|---|---|---|']
    for i in module_notebooks():
        rows.append(f"| `{i['path'].stem}` | `mlopsnb.{i['module']}` | {i['summary']} |")
    for folder in ('tutorials', 'jobs'):
        for nb in sorted((NBS / folder).glob('*.ipynb')):
            rows.append(f"| `{folder}/{nb.stem}` | — | {notebook_info(nb)['title']} |")
    return '\n'.join(rows)


def _find_table(header_re: str) -> tuple[dict, list[str]] | None:
    "The first numbered notebook with a markdown table whose header matches `header_re`, and the table's first column"
    for i in module_notebooks():
        for c in _cells(i['path']):
            if c['type'] != 'markdown': continue
            lines = c['source'].splitlines()
            for k, l in enumerate(lines):
                if l.startswith('|') and re.search(header_re, l, re.I):
                    col = []
                    for r in lines[k + 2:]:
                        if not r.startswith('|'): break
                        col += re.findall(r'`([^`]+)`', r.split('|')[1])
                    return i, col
    return None


def architecture() -> str:
    "The ARCHITECTURE section: stages in data-flow order, what each module owns and imports, where the contracts live"
    out = ['Each numbered notebook is one module with one purpose; its tens digit is its stage, and the stages are listed in '
           'the order data flows through them. "Imports" is read from the generated code, so it is always current.', '']
    by_stage: dict[int, list[dict]] = {}
    for i in module_notebooks(): by_stage.setdefault(int(i['path'].stem[0]), []).append(i)
    for stage, infos in sorted(by_stage.items()):
        out.append(f"**{stage}x {STAGES.get(stage, 'Other')}**")
        out.append('')
        for i in infos:
            uses = ', '.join(f"`{m}`" for m in module_imports(i['module'])) or 'nothing else of mlopsnb'
            out.append(f"- `mlopsnb.{i['module']}` ({i['path'].stem}): {i['summary']} Imports: {uses}.")
        out.append('')
    ctx = _find_table(r'^\|\s*variable\s*\|')
    if ctx:
        info, names = ctx
        out.append(f"**The job context.** `mlopsnb.{info['module']}` (`nbs/{info['path'].name}`) is the only module that knows the "
                   f"per-job environment variables a runner sets in a job's kernel; its variable table says what each means: "
                   f"{', '.join(f'`{n}`' for n in names)}. Everything that asks \"which run am I logging to?\" asks it.")
        out.append('')
    state = _find_table(r'^\|\s*field\s*\|.*written by')
    if state:
        info, fields = state
        out.append(f"**The Learner's state.** `mlopsnb.{info['module']}` (`nbs/{info['path'].name}`): {info['summary']} Its table "
                   f"gives each field's type, writer and readers: {', '.join(f'`{n}`' for n in fields)}.")
    else:
        out.append("**The Learner's state.** The fastai internals mlopsnb relies on are listed, each with a test, in "
                   "`mlopsnb.compat.FASTAI_PRIVATE_API`.")
    return '\n'.join(out).rstrip()


def fill(text: str) -> str:
    "`text` with the placeholders replaced by the generated module table and architecture"
    return text.replace(MODULES_MARK, module_table()).replace(ARCH_MARK, architecture())


def render() -> str:
    import nbformat
    from nbconvert import MarkdownExporter
    nb = nbformat.read(NBS / 'index.ipynb', as_version=4)
    cells = []
    for c in nb.cells:
        lines = c.source.splitlines()
        if c.cell_type == 'code' and any(l.strip().replace(' ', '') in ('#|hide', '#|export', '#|exporti') for l in lines): continue
        c.source = '\n'.join(l for l in lines if not l.lstrip().startswith('#|')).strip('\n')
        if c.cell_type == 'markdown': c.source = fill(c.source)
        if c.source: cells.append(c)
    nb.cells = cells
    nb.metadata['language_info'] = {'name': 'python'}  # fenced code blocks get a language
    body, _ = MarkdownExporter().from_notebook_node(nb)
    return body.strip() + '\n'


if __name__ == '__main__':
    text = render()
    out = ROOT / 'README.md'
    if '--check' in sys.argv:
        if not out.exists() or out.read_text() != text: sys.exit('README.md is out of date: run `make readme`')
    else: out.write_text(text)
