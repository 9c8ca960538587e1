"""Install paths: Binder runs the notebooks with CPU torch only; make installs CPU torch
first."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
#: Import names whose distribution is named otherwise, and what Binder's image provides
#: (Jupyter itself depends on them).
DIST_NAMES = {
    "IPython": "ipython",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "sklearn": "scikit-learn"
}
PROVIDED_BY_BINDER = {"ipython", "ipykernel", "nbformat"}
NOT_FOR_RUNNING = ("jupyter-book", "pytest", "nbval", "sphinx", "playwright", "otter")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if match:
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def _third_party_imports() -> set[str]:
    sources = [p.read_text() for p in (ROOT / "lib").glob("*.py")]
    for path in (ROOT / "chapters").glob("*.ipynb"):
        sources += [
            c.source for c in nbformat.read(path, 4).cells if c.cell_type == "code"
        ]
    names = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:  # a cell with IPython magics
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    names -= set(sys.stdlib_module_names) | {"lib"}
    return {DIST_NAMES.get(n, n).lower() for n in names}


def test_binder_installs_what_the_notebooks_import_with_cpu_torch():
    text = (ROOT / "binder" / "requirements.txt").read_text()
    binder, lock = _pins(ROOT / "binder" / "requirements.txt"), _pins(
        ROOT / "constraints.txt")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text
    assert binder.get(
        "torch") == lock["torch"] + "+cpu", "Binder must pin the CPU build"
    missing = _third_party_imports() - set(binder) - PROVIDED_BY_BINDER
    assert (
        not missing
    ), f"binder/requirements.txt lacks what the notebooks import: {missing}"
    extra = [n for n in binder if n.startswith(NOT_FOR_RUNNING)]
    assert (
        not extra
    ), f"binder/requirements.txt installs tools not needed to run: {extra}"
    stale = {n: (v, lock.get(n)) for n, v in binder.items()
             if n != "torch" and v != lock.get(n)}
    assert not stale, f"binder pins differ from constraints.txt (binder, lock): {stale}"
    assert (ROOT / "binder" / "runtime.txt").read_text().strip().startswith("python-3.")


def test_make_installs_cpu_torch_before_the_requirements():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("$(STAMP):"):makefile.index("touch $@")]
    local = recipe.index("--no-index --no-deps -c constraints.txt torch")
    cpu_index = recipe.index("--index-url $(TORCH_CPU_INDEX)")
    rest = recipe.index("pip install -r requirements.txt")
    assert local < cpu_index < rest
    assert "TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu" in makefile
    assert 'if [ "$(TORCH)" = cpu ]' in recipe
