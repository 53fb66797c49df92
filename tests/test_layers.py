"""The layout the README states, checked on the source: the core never imports the UI layer, and no
module imports one that imports it back (directly or round a longer circle), lazily or not."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UI_LAYER = ('swiftnb.widgets', 'swiftnb.magics', 'swiftnb.app_ui', 'swiftnb.cli', 'swiftnb.terminal_chat')
# The one way in from the core: IPython's `%load_ext swiftnb` calls swiftnb.load_ipython_extension, which
# imports the magics when it is called.
ALLOWED = {('swiftnb', 'swiftnb.magics')}


def modules() -> dict[str, Path]:
    found = {}
    for base, package in ((ROOT / 'swiftnb', 'swiftnb'), (ROOT / 'widgets', 'swiftnb.widgets')):
        for path in base.rglob('*.py'):
            if 'assets' in path.parts:
                continue
            parts = [package, *path.relative_to(base).with_suffix('').parts]
            found['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
    return found


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The swiftnb modules `name` imports anywhere in its source (the package root aside: it only re-exports)."""
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1] + ([base] if base else []))
            targets = [f'{base}.{alias.name}' if f'{base}.{alias.name}' in known else base for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != 'swiftnb' and t != name}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def in_ui(name: str) -> bool:
    return any(name == ui or name.startswith(ui + '.') for ui in UI_LAYER)


def test_the_core_imports_nothing_from_the_ui_layer():
    edges = graph()
    wrong = sorted((a, b) for a, targets in edges.items() for b in targets
                   if not in_ui(a) and in_ui(b) and (a, b) not in ALLOWED)
    assert not wrong, wrong


def test_no_import_circles():
    edges = graph()
    circles = []

    def visit(node, path):
        for target in sorted(edges.get(node, ())):
            if target in path:
                circles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target, path + [target])
        done.add(node)
    done = set()
    for start in sorted(edges):
        if start not in done:
            visit(start, [start])
    assert not circles, circles
