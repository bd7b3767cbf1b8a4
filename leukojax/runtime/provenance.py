"""Which code produced a result: the git commit of the checkout (or the installed version)."""

from __future__ import annotations

import pathlib
import subprocess
from importlib import metadata

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[2]


def code_version() -> str:
  """`<short commit>[+dirty]` in a git checkout of LeukoJAX, else `leukojax <version>` (a wheel)."""
  try:
    if (PACKAGE_ROOT / ".git").exists():
      rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PACKAGE_ROOT, capture_output=True,
                           text=True, timeout=10).stdout.strip()
      dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PACKAGE_ROOT,
                             capture_output=True, text=True, timeout=10).stdout.strip()
      if rev:
        return f"{rev}{'+dirty' if dirty else ''}"
  except (OSError, subprocess.SubprocessError):
    pass
  try:
    return f"leukojax {metadata.version('leukojax')}"
  except metadata.PackageNotFoundError:
    return "unknown"
