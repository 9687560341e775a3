"""Import graph of the comfyui_pal package from its source (ast; nothing is imported or run).

    python tests/check_imports.py            # the layering/cycle verdict; exit 1 on any violation
    python tests/check_imports.py --graph    # also every package-internal edge, one "a -> b" a line

Checks:
- core/ is host-free: no import of models/, training/, cli/, pal_nodes/, scripts/ (A1111) nor of
  ComfyUI or A1111 modules (comfy, comfy_extras, folder_paths, nodes, server, modules, gradio, ...),
  at module level or inside a function;
- core/ uses no private name of another module (``from .crop import _x``, ``diffusers.utils._y``);
- no import cycle anywhere in the package. Edges are every import statement, including the lazy
  ones inside functions (a lazy cycle is still two modules that need each other); importing
  ``pkg.mod`` also counts as importing ``pkg`` (Python runs ``pkg/__init__.py`` first).

tests/test_layering.py runs the same checks in the suite.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "comfyui_pal"
SUBPACKAGES = ("core", "models", "cli", "training", "pal_nodes")
# What core/ must never import: the rest of the package above it, and the hosts.
CORE_FORBIDDEN_INTERNAL = ("models", "training", "cli", "pal_nodes", "scripts")
CORE_FORBIDDEN_EXTERNAL = ("comfy", "comfy_extras", "comfy_api", "folder_paths", "nodes", "server",
                           "execution", "latent_preview", "modules", "gradio", "webui", "launch")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for the package's own modules (the repo root is ``comfyui_pal``)."""
    out = {PACKAGE: root / "__init__.py"}
    for sub in SUBPACKAGES:
        for f in sorted((root / sub).rglob("*.py")):
            rel = f.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([PACKAGE, *parts])] = f
    return out


def _is_package(name: str, files: dict[str, Path]) -> bool:
    return files[name].name == "__init__.py"


def _resolve_from(module: str, node: ast.ImportFrom, files: dict[str, Path]) -> str | None:
    if node.level == 0:
        return node.module
    base = module.split(".") if _is_package(module, files) else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _statements(tree: ast.AST, lazy: bool) -> Iterable[ast.AST]:
    """Every node, or (lazy=False) only those run at import time: not inside a function body."""
    if lazy:
        yield from ast.walk(tree)
        return
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo += [c for c in ast.iter_child_nodes(node) if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef))]


def imports_of(module: str, files: dict[str, Path], lazy: bool = True) -> list[tuple[str, int, list[str]]]:
    """(imported module, line, names) for every import statement in the module (lazy=False: import time only)."""
    tree = ast.parse(files[module].read_text(encoding="utf-8"), str(files[module]))
    out = []
    for node in _statements(tree, lazy):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve_from(module, node, files)
            if target is not None and target != "__future__":
                out.append((target, node.lineno, [a.name for a in node.names]))
    return out


def internal_edges(files: dict[str, Path], lazy: bool = True) -> dict[str, set[str]]:
    """module -> package modules it imports (``from . import x`` -> the submodule x when there is one)."""
    graph: dict[str, set[str]] = {m: set() for m in files}
    for m in files:
        for target, _, names in imports_of(m, files, lazy):
            if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
                continue
            hits = [f"{target}.{n}" for n in names if f"{target}.{n}" in files]
            targets = hits if hits and len(hits) == len(names) else [target, *hits]
            for t in targets:
                while t not in files and "." in t:
                    t = t.rsplit(".", 1)[0]
                # importing a.b.c runs a/__init__ and a/b/__init__ first
                parts = t.split(".")
                for i in range(2, len(parts) + 1):
                    p = ".".join(parts[:i])
                    if p in files and p != m and not m.startswith(p + "."):
                        graph[m].add(p)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def core_violations(files: dict[str, Path]) -> list[str]:
    """core/ importing the layers above it or a host, or using another module's private names."""
    bad = []
    core_prefix = f"{PACKAGE}.core"
    for m, f in files.items():
        if not (m == core_prefix or m.startswith(core_prefix + ".")):
            continue
        rel = f.relative_to(ROOT) if f.is_relative_to(ROOT) else f
        for target, line, names in imports_of(m, files):
            top = target.split(".")[0]
            if target.startswith(PACKAGE + "."):
                layer = target.split(".")[1]
                if layer in CORE_FORBIDDEN_INTERNAL:
                    bad.append(f"{rel}:{line}: core imports {target} (core must not depend on {layer}/)")
                elif target != m and any(n.startswith("_") and not n.startswith("__") for n in names):
                    priv = [n for n in names if n.startswith("_") and not n.startswith("__")]
                    bad.append(f"{rel}:{line}: core imports private {priv} from {target}")
            elif top in CORE_FORBIDDEN_EXTERNAL:
                bad.append(f"{rel}:{line}: core imports the host module {target}")
            elif any(n.startswith("_") and not n.startswith("__") for n in names):
                bad.append(f"{rel}:{line}: core imports a private name {names} from {target}")
        bad += [f"{rel}:{line}: {msg}" for line, msg in _private_attribute_uses(f)]
    return bad


def _private_attribute_uses(path: Path) -> Iterable[tuple[int, str]]:
    """``ext_module._name`` where ext_module is a name bound by an import of another package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    external: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                external.add((a.asname or a.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
            external.update(a.asname or a.name for a in node.names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in external:
                yield node.lineno, f"core uses the private attribute {ast.unparse(node)} of another package"
        # hasattr(mod, "_x") / getattr(mod, "_x"): probing a private name is using it
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("hasattr", "getattr") and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
                and node.args[1].value.startswith("_") and not node.args[1].value.startswith("__")):
            base = node.args[0]
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in external:
                yield node.lineno, f"core probes the private attribute in {ast.unparse(node)}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    files = module_files()
    graph = internal_edges(files)
    if "--graph" in argv:
        for m in sorted(graph):
            for t in sorted(graph[m]):
                print(f"{m} -> {t}")
    cycles = find_cycles(graph)
    eager_cycles = find_cycles(internal_edges(files, lazy=False))
    core = core_violations(files)
    n_edges = sum(len(v) for v in graph.values())
    print(f"{len(files)} modules, {n_edges} package-internal import edges (lazy imports included)")
    core_to_models = [t for m, ts in graph.items() if m.startswith(f"{PACKAGE}.core") for t in ts
                      if t.startswith(f"{PACKAGE}.models")]
    print(f"core -> models edges: {len(core_to_models)}")
    for line in core:
        print(f"LAYERING {line}")
    for c in cycles:
        kind = "import-time" if c in eager_cycles else "lazy (inside functions)"
        print(f"CYCLE {' <-> '.join(c)}  [{kind}]")
    print(f"import cycles: {len(cycles)} ({len(eager_cycles)} at import time); "
          f"core layering violations: {len(core)}")
    return 1 if cycles or core else 0


if __name__ == "__main__":
    raise SystemExit(main())
