"""Imports only go down the layers drawn in docs/architecture.md.

An AST check: every ``import`` / ``from ... import`` (relative ones resolved, lazy ones inside functions and
``TYPE_CHECKING`` blocks included, and the ``_LAZY`` name -> module maps of package ``__init__`` files) in
app.py, ``app/`` and ``lumiere/`` is read from the source; no module is imported, so the check is fast and
needs no torch.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The layer order, highest first: a module may import its own layer and the layers below it, never one above.
# A key covers itself and its submodules ("lumiere.train" covers lumiere.train.loop), except "lumiere",
# which is the package's __init__ alone. A module without a layer fails test_every_module_has_a_layer: place
# it here and in docs/architecture.md. Keep the two in step.
LAYERS = {
    "app.py": 100,                  # the entry point: python app.py
    "app": 90,                      # the Gradio UI and model management (no model math)
    "lumiere.__main__": 80,         # python -m lumiere
    "lumiere.cli": 75,              # the command line
    "lumiere.train": 70,            # the training stages, loop, checkpoints, packing (accelerate)
    "lumiere.evaluation": 70,       # held-out evaluation on the procedural world
    "lumiere.build": 65,            # new pipelines from a model config (training, inflate)
    "lumiere": 60,                  # public API: lumiere/__init__.py and LumierePipeline
    "lumiere.pipeline": 60,
    "lumiere.tasks": 55,            # one program per task; the model bundle they run on and its directory
    "lumiere.bundle": 55,           # format
    "lumiere.pipeline_format": 55,
    "lumiere.sampling": 50,         # sampling: schedulers and noise, the denoisers and their loop, the SSR,
    "lumiere.denoisers": 50,        # temporal windows, the (C, M) builders, style interpolation
    "lumiere.super_resolution": 50,
    "lumiere.multidiffusion": 50,
    "lumiere.conditioning": 50,
    "lumiere.styles": 50,
    "lumiere.components": 40,       # where models live: the registry, lazy loading, device placement
    "lumiere.models": 30,           # the networks: STUNet, temporal modules, text encoder, VAE
    "lumiere.data": 25,             # the procedural world, its analysis, datasets
    "lumiere.request": 20,          # values, cheap to import (no torch): requests and their checks, options,
    "lumiere.options": 20,          # one call's progress counter, files, user input <-> tensors
    "lumiere.progress": 20,
    "lumiere.io": 20,
    "lumiere.preprocessing": 20,
    "lumiere.errors": 10,           # foundations: errors, checkpoint files / the Hub, CPU threads
    "lumiere.hub": 10,
    "lumiere.threads": 10,
}

# Modules only one importer may import, whatever the layers say.
ONLY_IMPORTED_BY = {"lumiere.cli": {"lumiere.__main__"}}

# Libraries a layer never imports: the library has no UI, the app no model math.
FORBIDDEN_LIBRARIES = {
    "lumiere": {"gradio", "gradio_client", "spaces", "starlette", "fastapi", "uvicorn"},
    "app": {"diffusers", "transformers", "accelerate"},
}

# Upward imports in the current code, each with why it is wrong and how it goes away. Not a licence:
# test_known_upward_imports_still_exist fails once one is gone, so remove its line then.
KNOWN_UPWARD: set[tuple[str, str]] = set()  # none: every import runs down the layers


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    if rel == Path("app.py"):
        return "app.py"
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _files() -> list[Path]:
    return [ROOT / "app.py", *sorted((ROOT / "app").rglob("*.py")), *sorted((ROOT / "lumiere").rglob("*.py"))]


@lru_cache(maxsize=None)
def _known_modules() -> frozenset[str]:
    return frozenset(_module_name(path) for path in _files())


def _target(package: str, name: str) -> str:
    """``from package import name``: the submodule when ``name`` is one, else the package."""
    candidate = f"{package}.{name}" if package else name
    return candidate if candidate in _known_modules() else package


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in ``path``, absolute names."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module
            found += [(_target(source, alias.name), node.lineno) for alias in node.names]
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
            if isinstance(node.value, ast.Dict):  # name -> module, imported on first use (import_module)
                found += [(v.value, node.lineno) for v in node.value.values
                          if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return found


def layer(module: str) -> int | None:
    """The layer of ``module`` (longest key of LAYERS that covers it), None when it has none."""
    best = None
    for key in LAYERS:
        covers = module == key or (key != "lumiere" and module.startswith(key + "."))
        if covers and (best is None or len(key) > len(best)):
            best = key
    return None if best is None else LAYERS[best]


def _internal(name: str) -> bool:
    return name.split(".")[0] in ("lumiere", "app")


def _edges() -> list[tuple[str, str, str]]:
    """(importer, imported, "file:line") for every import of a lumiere / app module."""
    edges = []
    for path in _files():
        importer = _module_name(path)
        for imported, line in _imports(path):
            if _internal(imported) and imported != importer:
                edges.append((importer, imported, f"{path.relative_to(ROOT)}:{line}"))
    return list(dict.fromkeys(edges))


def test_every_module_has_a_layer():
    missing = sorted(m for m in _known_modules() if layer(m) is None)
    assert not missing, f"place these modules in LAYERS (tests/test_architecture.py) and docs/architecture.md: {missing}"


def test_imports_only_go_down():
    upward = [f"{where}: {importer} (layer {layer(importer)}) imports {imported} (layer {layer(imported)})"
              for importer, imported, where in _edges()
              if layer(importer) is not None  # an unplaced module: test_every_module_has_a_layer
              if layer(imported) is None or layer(imported) > layer(importer)
              if (importer, imported) not in KNOWN_UPWARD]
    assert not upward, "imports against the layer order of docs/architecture.md:\n" + "\n".join(upward)


def test_private_entry_modules_are_imported_only_by_their_entry():
    wrong = [f"{where}: {importer} imports {imported}" for importer, imported, where in _edges()
             if imported in ONLY_IMPORTED_BY and importer not in ONLY_IMPORTED_BY[imported]]
    assert not wrong, "\n".join(wrong)


def test_layers_do_not_import_forbidden_libraries():
    wrong = []
    for path in _files():
        importer = _module_name(path)
        forbidden = FORBIDDEN_LIBRARIES.get(importer.split(".")[0], set())
        wrong += [f"{path.relative_to(ROOT)}:{line}: {importer} imports {name}"
                  for name, line in _imports(path) if name.split(".")[0] in forbidden]
    assert not wrong, "\n".join(wrong)


def test_known_upward_imports_still_exist():
    present = {(importer, imported) for importer, imported, _ in _edges()}
    gone = sorted(KNOWN_UPWARD - present)
    assert not gone, f"fixed, so remove from KNOWN_UPWARD (and docs/architecture.md): {gone}"


def test_the_check_sees_relative_lazy_and_upward_imports(tmp_path):
    """The parser itself: a relative import resolves, a lazy one counts, an upward one is caught."""
    assert ("lumiere.threads", 8) in _imports(ROOT / "lumiere" / "__init__.py")
    assert "lumiere.pipeline" in {name for name, _ in _imports(ROOT / "lumiere" / "__init__.py")}  # _LAZY
    assert layer("lumiere.models.stunet") == LAYERS["lumiere.models"] and layer("lumiere.nonexistent") is None
    assert layer("lumiere") == LAYERS["lumiere"] and layer("app.ui") == LAYERS["app"]
    assert layer("lumiere.train.loop") > layer("lumiere.pipeline") > layer("lumiere.models.vae")
