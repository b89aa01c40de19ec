"""Check the package's shape, as `make test` does: no import circle between mlopsnb modules (lazy imports inside
functions count too), no import of another module's private name, no module-level import of an optional extra's package
without `require_extra(__name__, ...)` naming it first, no module over MAX_MODULE_LINES, no notebook cell over
MAX_CELL_LINES, and no reference to files outside the project.

Usage: python tools/check_architecture.py [--graph]   (exit 1 and one line per problem when the shape is wrong)"""
import ast, json, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / 'mlopsnb'
MAX_MODULE_LINES, MAX_CELL_LINES = 450, 60
GENERATED = {'_modidx'}
sys.path.insert(0, str(ROOT))
from mlopsnb.errors import extra_of  # after the path is set (the one table of which package belongs to which extra)


def _module_of(node: ast.ImportFrom, here: str) -> str | None:
    "The mlopsnb module an ImportFrom names (None for third-party imports)"
    if node.level:  # relative: nbdev writes `from .core import x`
        return node.module.split('.')[0] if node.module else None
    if node.module and (node.module == 'mlopsnb' or node.module.startswith('mlopsnb.')):
        parts = node.module.split('.')
        return parts[1] if len(parts) > 1 else None
    return None


def imports(path: Path) -> tuple[set[str], list[str]]:
    "(mlopsnb modules this file imports anywhere in it, private names it imports from other modules)"
    tree, here = ast.parse(path.read_text(), str(path)), path.stem
    mods, private = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = _module_of(node, here)
            if mod is None:
                if (node.level or node.module == 'mlopsnb'):  # `from . import x` / `from mlopsnb import x`
                    for a in node.names:
                        if (PKG / f'{a.name}.py').exists(): mods.add(a.name)
                continue
            mods.add(mod)
            private += [f"{path.name}:{node.lineno} imports {a.name} from mlopsnb.{mod}" for a in node.names
                        if a.name.startswith('_') and not a.name.startswith('__')]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith('mlopsnb.'): mods.add(a.name.split('.')[1])
    mods.discard(here)
    return mods, private


def undeclared_extras(path: Path) -> list[str]:
    "Module-level imports of an extra's package (torch, pandas...) not named by a `require_extra(__name__, ...)` before them"
    declared, bad = set(), []
    for node in ast.parse(path.read_text(), str(path)).body:  # module level only: imports inside functions are lazy
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and getattr(node.value.func, 'id', None) == 'require_extra':
            declared |= {a.value for a in node.value.args[1:] if isinstance(a, ast.Constant)}
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else []
        for top in dict.fromkeys(n.split('.')[0] for n in names):
            if extra_of(top) and top not in declared:
                declared.add(top)  # one line per package is enough
                bad.append(f"{path.name}:{node.lineno} imports {top} (the `{extra_of(top)}` extra) without `require_extra(__name__, ..., '{top}')` before it")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    "Every strongly connected component with more than one module (Tarjan)"
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph: continue
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in sorted(graph):
        if v not in index: visit(v)
    return out


def notebook_cells(nb: Path):
    for i, c in enumerate(json.loads(nb.read_text()).get('cells', [])):
        if c.get('cell_type') != 'code': continue
        src = ''.join(c['source']) if isinstance(c['source'], list) else c['source']
        yield i, src


def outside_references() -> list[str]:
    "Tracked files that cite a file outside the project (the team's design notes, ../shared)"
    files = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True).stdout.split()
    bad = []
    for f in files:
        if f.startswith('tools/check_architecture') or not f.endswith(('.py', '.ipynb', '.md', '.toml', '.yml', 'Makefile')): continue
        try: text = (ROOT / f).read_text()
        except (OSError, UnicodeDecodeError): continue
        if re.search(r'DESIGN\.md|\.\./shared/', text): bad.append(f"{f} cites a file outside the project (DESIGN.md or ../shared)")
    return bad


def main() -> int:
    graph, problems = {}, []
    for f in sorted(PKG.glob('*.py')):
        if f.stem in GENERATED or f.stem == '__init__': continue
        graph[f.stem], private = imports(f)
        problems += private + undeclared_extras(f)
        n = len(f.read_text().splitlines())
        if n > MAX_MODULE_LINES: problems.append(f"{f.name} has {n} lines (at most {MAX_MODULE_LINES}): split it by purpose")
    problems += [f"import circle: {' -> '.join(c)}" for c in cycles(graph)]
    for nb in sorted((ROOT / 'nbs').rglob('*.ipynb')):
        if any(p.startswith(('.', '_')) for p in nb.relative_to(ROOT / 'nbs').parts): continue
        for i, src in notebook_cells(nb):
            n = len(src.splitlines())
            if n > MAX_CELL_LINES: problems.append(f"{nb.relative_to(ROOT)} cell {i} has {n} lines (at most {MAX_CELL_LINES})")
    problems += outside_references()
    if '--graph' in sys.argv:
        for m in sorted(graph): print(f"{m}: {', '.join(sorted(graph[m])) or '-'}")
    for p in problems: print(p)
    if problems: print(f"{len(problems)} architecture problem(s)"); return 1
    print(f"architecture: {len(graph)} modules, no import circle, no private import, extras declared, modules <= {MAX_MODULE_LINES} lines, cells <= {MAX_CELL_LINES} lines")
    return 0


if __name__ == '__main__':
    sys.exit(main())
