"""The import contract: docs/architecture.md's table says which package may import which; the code must agree.

The table is parsed from the doc (so the doc and this test cannot disagree), every module's imports are read with
ast (imports inside functions too, and the module-name strings of lazy tables such as pi0viz.__init__'s), and:
- each package imports only the pi0viz packages and the optional frameworks its row names;
- no two packages import each other, directly or round a cycle; no library module imports a command (`cli.py`);
- nothing in core/ imports a backend (model, torch_capture, policy) or a model framework, whatever the doc says;
- the table names every folder and module of src/pi0viz, and nothing that is not there.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "pi0viz"
DOC = ROOT / "docs" / "architecture.md"

# Third-party packages that only an extra installs: a package may import one only where its row names it.
OPTIONAL = {"jax", "jaxlib", "flax", "orbax", "optax", "torch", "torchvision", "transformers", "lerobot",
            "sentencepiece", "ray", "libero", "robosuite", "mujoco", "imageio", "imageio_ffmpeg", "rerun",
            "playwright"}
MODEL_FRAMEWORKS = {"jax", "jaxlib", "flax", "orbax", "optax", "torch", "torchvision", "transformers", "lerobot",
                    "sentencepiece"}
BACKENDS = {"model", "torch_capture", "policy"}
COMMANDS = "commands"  # the row of the `pi0viz` command: cli.py, demo.py and every package's cli.py


def package_of(module: str) -> str:
    """pi0viz.render.engine -> "render"; pi0viz.errors -> "errors"; pi0viz -> "pi0viz"; any cli module or
    pi0viz.demo -> the command row."""
    parts = module.split(".")
    if parts[-1] == "cli" or module == "pi0viz.demo":
        return COMMANDS
    return parts[1] if len(parts) > 1 else "pi0viz"


@cache
def modules() -> dict[str, Path]:
    """Every module of src/pi0viz by dotted name (packages by their own name)."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(module: str) -> set[str]:
    """Dotted names `module` imports anywhere in its file (relative imports resolved; `from pkg import name`
    counts as pkg.name when that is a module, else pkg), plus string constants naming a pi0viz module (lazy
    imports through importlib)."""
    path = modules()[module]
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules())
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value \
                and node.value in modules():  # "pi0viz.render.engine" in a lazy table ("pi0viz" alone: a name)
            found.add(node.value)
    return found


@cache
def edges() -> dict[str, dict[str, set[str]]]:
    """package -> {imported pi0viz package or optional framework -> the modules that import it}."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for module in modules():
        source = package_of(module)
        for target in imports_of(module):
            top = target.split(".")[0]
            if top == "pi0viz":
                # `import pi0viz.x.y` is an import of the deepest pi0viz module named
                while target not in modules():
                    target = target.rsplit(".", 1)[0]
                dest = package_of(target)
                if dest != source:
                    graph[source][dest].add(module)
            elif top in OPTIONAL:
                graph[source][top].add(module)
    return graph


def row_key(cell: str) -> str:
    """The table's first column -> a package name: `core/` -> core, `errors.py` -> errors, `__init__.py` ->
    pi0viz, the command row -> commands."""
    names = re.findall(r"`([^`]+)`", cell)
    if any(n.endswith("cli.py") for n in names):
        return COMMANDS
    name = names[0]
    return "pi0viz" if name == "__init__.py" else name.removesuffix("/").removesuffix(".py")


@cache
def contract() -> dict[str, tuple[set[str], set[str]]]:
    """Parsed from docs/architecture.md's import table: package -> (pi0viz packages it may import, optional
    frameworks it may import). "any" in the pi0viz column: every package."""
    text = DOC.read_text()
    lines = text[text.index("| folder | owns | may import | frameworks |"):].splitlines()
    table: dict[str, tuple[set[str], set[str]]] = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 4, f"architecture.md: a table row needs 4 cells: {line}"
        key = row_key(cells[0])
        # folders (`core/`) and modules (`errors.py`) in backticks; other backticked words are remarks
        named = re.findall(r"`([\w*]+/|[\w*]+\.py)`", cells[2])
        allowed = {"any"} if cells[2] == "any" else {row_key(f"`{n}`") for n in named}
        frameworks = set(re.findall(r"[a-z_]+", cells[3])) - {"none"}
        table[key] = (allowed, frameworks)
    return table


def test_the_table_names_every_package_and_nothing_else():
    packages = {package_of(m) for m in modules()}
    table = contract()
    assert set(table) == packages, f"in the code, not the table: {packages - set(table)}; " \
                                   f"in the table, not the code: {set(table) - packages}"
    for key, (allowed, frameworks) in table.items():
        assert allowed <= packages | {"any"}, f"{key}: the table names unknown packages {allowed - packages}"
        assert frameworks <= OPTIONAL, f"{key}: {frameworks - OPTIONAL} is not an optional framework"


@pytest.mark.parametrize("package", sorted({package_of(m) for m in modules()}))
def test_imports_follow_the_table(package):
    allowed, frameworks = contract()[package]
    wrong = []
    for dest, by in sorted(edges()[package].items()):
        if dest in OPTIONAL:
            if dest not in frameworks:
                wrong.append(f"{dest} (framework) from {sorted(by)}")
        elif "any" not in allowed and dest not in allowed:
            wrong.append(f"{dest} from {sorted(by)}")
    assert not wrong, f"{package} imports what docs/architecture.md's table does not allow: {wrong}"


def test_no_cycles_between_packages():
    graph = {p: {d for d in dests if d not in OPTIONAL} for p, dests in edges().items() if p != COMMANDS}
    assert COMMANDS not in {d for dests in graph.values() for d in dests}, \
        f"a library module imports a command: {[p for p, d in graph.items() if COMMANDS in d]}"
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_core_imports_no_backend_and_no_model_framework():
    """Whatever the table says: core/ stays numpy-level."""
    reached = edges()["core"]
    assert not (set(reached) & (BACKENDS | MODEL_FRAMEWORKS)), {k: sorted(v) for k, v in reached.items()}
    allowed, frameworks = contract()["core"]
    assert not (allowed & BACKENDS) and not (frameworks & MODEL_FRAMEWORKS)


def test_no_module_cycle_inside_a_package():
    """Modules of one package do not import each other round a circle (lazy imports included)."""
    graph: dict[str, set[str]] = {}
    for module in modules():
        deps = set()
        for target in imports_of(module):
            while target and target not in modules():
                target = target.rsplit(".", 1)[0] if "." in target else ""
            # a package's own __init__ re-exporting its modules is not a dependency of those modules
            if target and target != module and package_of(target) == package_of(module) \
                    and not module.startswith(target + "."):
                deps.add(target)
        graph[module] = deps
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("module import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_each_public_name_is_defined_once():
    """A public function or class (module level, no leading underscore) has one definition in src/pi0viz."""
    where: dict[str, list[str]] = defaultdict(list)
    for module, path in modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                where[node.name].append(module)
    twice = {name: mods for name, mods in where.items() if len(mods) > 1}
    assert not twice, f"public names defined more than once: {twice}"
