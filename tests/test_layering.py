"""The design's one-way data flow: a lower layer never imports a higher one.

lattice -> crf -> refine/nn/contextual -> models/data -> recipes -> cli (DESIGN.md). Every
top-level module of the package has a level here; a new module must be given one.
"""

import ast
from pathlib import Path

import deepcrf

LEVELS = {
    # foundations without CRF knowledge
    "allocator": 0, "arrays": 0, "cache": 0, "fileio": 0, "parallel": 0, "threads": 0,
    "params": 0, "inputs": 0,
    # filtering
    "lattice": 1, "exact": 1, "bandwidth": 2, "kernel": 2, "features": 2,
    # the mean-field core
    "crf": 3,
    # post-processing API, trainable layers, contextual CRF, pydensecrf drop-in
    "dense": 4, "tiling": 4, "routing": 4, "nn": 4, "contextual": 4, "compat": 4,
    # models, data, metrics, pictures
    "models": 5, "data": 5, "metrics": 5, "viz": 5, "evaluation": 5,
    # applications of the CRF over data
    "search": 6, "weak": 6,
    "recipes": 7,
    "cli": 8, "__main__": 8,
}  # fmt: skip

ROOT = Path(deepcrf.__file__).parent


def _imports(path: Path, package: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {n for n in found if n == "deepcrf" or n.startswith("deepcrf.")}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "deepcrf"


def test_every_module_has_a_level():
    tops = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()}
    tops = {t for t in tops if not t.startswith(("_", ".")) or t == "__main__"}
    tops -= {"__init__", "py", "__pycache__"}
    modules = {t for t in tops if (ROOT / t).is_dir() or (ROOT / f"{t}.py").is_file()}
    assert modules <= set(LEVELS), f"give these modules a level: {sorted(modules - set(LEVELS))}"


def test_no_module_imports_a_higher_layer():
    wrong = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        is_init = parts[-1] == "__init__"
        if is_init:
            parts = parts[:-1]
        module = ".".join(["deepcrf", *parts])
        package = module if is_init else module.rsplit(".", 1)[0]
        if module == "deepcrf":
            continue  # the package's public names re-export from several layers
        level = LEVELS[_top(module)]
        for name in _imports(path, package):
            target = _top(name)
            if target != "deepcrf" and LEVELS[target] > level:
                wrong.append(f"{module} imports {name}")
            if target == "deepcrf" and level < max(LEVELS[t] for t in ("crf", "dense")):
                wrong.append(f"{module} imports the package root")
    assert not wrong, "\n".join(sorted(wrong))
