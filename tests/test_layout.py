"""The package's one-way layout (docs/architecture.md): commands on top, libraries by role below.

A library may import only the roles listed for it; nothing imports a command. Read from the source
with `ast`, so an import inside a function counts too.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "leukojax"

# role -> the roles it may import (besides itself). Commands are the top-level modules.
ALLOWED = {
    "runtime": set(),
    "models": set(),
    "data": {"models"},  # data only uses models.preprocessing, the backbones' input convention
    "configs": {"data", "models"},
    "training": {"data", "models", "runtime"},
    "evaluation": {"training", "data", "models", "runtime"},  # runtime.provenance: the report's commit
    "explanation": {"evaluation", "data", "models"},
    "baselines": {"evaluation", "data"},
}
# Top-level modules every role may import, which import nothing of leukojax themselves.
FOUNDATION = {"errors", "files"}  # LeukojaxError, the base of every error a user can fix; atomic JSON writes
COMMANDS = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", *FOUNDATION))


def imported_modules(path: pathlib.Path) -> set[str]:
  names = set()
  for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module)
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return {n for n in names if n == "leukojax" or n.startswith("leukojax.")}


def role_of(module: str) -> str | None:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else None


def test_every_role_folder_is_declared():
  folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
  assert folders == set(ALLOWED), "a new role folder needs its allowed imports in ALLOWED and docs/architecture.md"


@pytest.mark.parametrize("role", sorted(ALLOWED))
def test_libraries_import_only_the_roles_below_them(role):
  bad = []
  for path in sorted((PACKAGE / role).rglob("*.py")):
    for module in imported_modules(path):
      target = role_of(module)
      if target in COMMANDS:
        bad.append(f"{path.relative_to(PACKAGE)} imports the command {module}")
      elif target is not None and target != role and target not in ALLOWED[role] | FOUNDATION:
        bad.append(f"{path.relative_to(PACKAGE)} imports {module} ({role} may use {sorted(ALLOWED[role])})")
  assert not bad, "\n".join(bad)


def test_the_foundation_imports_nothing_of_leukojax():
  bad = [f"{f}.py imports {m}" for f in sorted(FOUNDATION) for m in imported_modules(PACKAGE / f"{f}.py")]
  assert not bad, "\n".join(bad)


def test_commands_do_not_import_each_other():
  bad = [f"{c}.py imports {m}" for c in COMMANDS for m in imported_modules(PACKAGE / f"{c}.py")
         if role_of(m) in COMMANDS]
  assert not bad, "\n".join(bad)
