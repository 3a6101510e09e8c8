"""Layers point down: an AST scan of every module under umm/ fails on an import of a higher layer (at the top
of a file or inside a function alike). docs/architecture.md draws the same ladder."""

import ast
from pathlib import Path

import umm

ROOT = Path(umm.__file__).parent

# lowest first; a module belongs to the layer of its longest matching prefix
LAYERS = [
    ("base", ["umm", "umm.config", "umm.registry", "umm.recipes"]),
    ("parts", ["umm.nn", "umm.paths", "umm.samplers", "umm.objectives"]),
    ("data", ["umm.data", "umm.tokenizers.text", "umm.tokenizers.audio"]),
    ("contract", ["umm.models.factory", "umm.models.system", "umm.models.lora"]),  # build / save / load a system
    ("image tokenizers", ["umm.tokenizers"]),
    ("models", ["umm.models"]),
    ("pipelines", ["umm.pipelines"]),
    ("machinery", ["umm.training", "umm.eval"]),
    ("bench", ["umm.bench"]),
    ("front doors", ["umm.api", "umm.serve", "umm.demo"]),
    ("commands", ["umm.commands", "umm.cli"]),
]

# Known upward edges, each with its reason; the list may only shrink. Every system runs its loops through
# SystemBase.mechanism (umm.registry.LOOPS, filled by umm.pipelines), so no model imports the pipelines.
ALLOWED = {
    ("umm", "umm.api"): "the package's front door: umm.load / umm.train, imported on first use",
}


def layer(module: str) -> int:
    best, length = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = i, len(prefix)
    assert best >= 0, f"{module} is in no layer: add it to LAYERS"
    return best


def imported_modules(path: Path, module: str, package: str) -> list[tuple[str, int]]:
    """Every umm module that ``path`` imports: ``from a import b`` counts as ``a.b`` when ``b`` is a module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = (ROOT.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                    (ROOT.parent / Path(*sub.split("."))).is_dir()
                out.append((sub if is_module else base, node.lineno))
    return [(m, line) for m, line in out if m == "umm" or m.startswith("umm.")]


def edges() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if parts[-1] == "__init__" else ".".join(parts[:-1])
        for target, line in imported_modules(path, module, package):
            found.append((module, target, f"{path.relative_to(ROOT.parent)}:{line}"))
    return found


def allowed(source: str, target: str) -> bool:
    return any(source == a and (target == b or target.startswith(b + ".")) for a, b in ALLOWED)


def test_no_module_imports_a_higher_layer():
    upward = [f"{where}: {source} ({LAYERS[layer(source)][0]}) imports {target} ({LAYERS[layer(target)][0]})"
              for source, target, where in edges() if layer(target) > layer(source) and not allowed(source, target)]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_every_allowed_upward_edge_still_exists():
    """An allowance that no import needs any more must be deleted, so the list only shrinks."""
    present = {(s, t) for s, t, _ in edges()}
    stale = [pair for pair in ALLOWED if not any(s == pair[0] and (t == pair[1] or t.startswith(pair[1] + "."))
                                                 for s, t in present)]
    assert not stale, f"remove these from ALLOWED: {stale}"


def test_the_scan_sees_function_level_imports(tmp_path):
    """The scan must catch an upward import hidden inside a function, or it guards nothing."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from umm.eval.harness import evaluate\n    import umm.cli\n")
    found = imported_modules(source, "umm.nn.probe", "umm.nn")
    assert ("umm.eval.harness", 2) in found and ("umm.cli", 3) in found
    assert all(layer(m) > layer("umm.nn.probe") for m, _ in found)
