"""The package's folders are its architecture: the model and its rendering are pure, so they
import nothing from the kernel-facing code or the commands (and stay testable without root)."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "pyfront/netprobe"


def imported_packages(path: Path) -> set[str]:
    """The netprobe subpackages a module imports from, anywhere in it (function-level imports
    too), as `kernel`, `commands`, ..."""
    sub = path.parent.name
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("netprobe."):
                found.add(node.module.split(".")[1])
            elif node.level == 1:
                found.add(sub)
            elif node.level == 2 and node.module:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("netprobe.")}
    return found


def type_checking_only(path: Path) -> set[str]:
    """Imports under `if TYPE_CHECKING:` are for annotations only and do not count."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.level == 2 and inner.module:
                    found.add(inner.module.split(".")[0])
    return found


PURE = sorted((PKG / "model").glob("*.py")) + sorted((PKG / "render").glob("*.py"))


@pytest.mark.parametrize("path", PURE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pure_packages_import_no_kernel_side_or_commands(path):
    wrong = (imported_packages(path) - type_checking_only(path)) & {"kernel", "commands"}
    assert not wrong, f"{path.name} imports from {sorted(wrong)}"


def test_every_module_is_in_a_role_package():
    top = {p.name for p in PKG.glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "entry.py", "errors.py", "paths.py"}
