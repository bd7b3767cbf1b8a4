"""How every command ends on a user's mistake: one message that says what to do, exit status 1.

A `LeukojaxError` (bad config, data, workdir or weights) and a config override that names no
field are printed as `<command>: error: <message>`; a traceback is kept for real bugs, and for
everything with `LEUKOJAX_TRACEBACK=1`.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence

from absl import app, flags

from leukojax.errors import LeukojaxError

TRACEBACK_ENV = "LEUKOJAX_TRACEBACK"


def _fail(command: str, message: str) -> None:
  sys.stderr.write(f"{command}: error: {message}\n")
  sys.exit(1)


def _verbose() -> bool:
  return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def _config_keys(argv: Sequence[str]) -> list[str] | None:
  """Every field of the config that `--config FILE[:ARG]` names, or None if it cannot be loaded."""
  values = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
  spec_args = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
  spec = (values or spec_args or [None])[-1]
  if not spec:
    return None
  path, _, arg = spec.partition(":")
  try:
    module_spec = importlib.util.spec_from_file_location("_leukojax_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
  except Exception:  # pylint: disable=broad-except  (the flag parser reports a bad file itself)
    return None
  return sorted(_fields(config.to_dict()))


def _fields(tree: dict, prefix: str = "") -> list[str]:
  out = []
  for key, value in tree.items():
    out.extend(_fields(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"])
  return out


def _unknown_override(argv: Sequence[str]) -> str | None:
  """A message for the first `--config.FIELD=...` that names no field of the config, with the closest ones."""
  keys = _config_keys(argv)
  if keys is None:
    return None
  prefixes = {k.rsplit(".", i)[0] for k in keys for i in range(k.count(".") + 1)}
  for arg in argv:
    if not arg.startswith("--config.") or "=" not in arg:
      continue
    field = arg[len("--config."):].split("=", 1)[0]
    if field not in keys and field not in prefixes:
      close = difflib.get_close_matches(field, keys, n=3, cutoff=0.5) or [
          k for k in keys if k.startswith(field.rsplit(".", 1)[0] + ".")][:8]
      hint = f" Closest: {', '.join(close)}." if close else ""
      return f"--config.{field}: the config has no field {field!r}.{hint}"
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with a clear message for an override of a field the config lacks."""
  try:
    return flags.FLAGS(argv)
  except flags.Error:
    return app.parse_flags_with_usage(argv)  # absl's own message and usage
  except (KeyError, AttributeError, TypeError, ValueError) as error:
    if _verbose():
      raise
    _fail(os.path.basename(argv[0]), _unknown_override(argv) or f"bad flag value: {error}")
  return []  # unreachable: _fail exits


def guard(command: str, main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  """`main` with every `LeukojaxError` printed as one message (exit 1) rather than a traceback, and a
  multi-process run that lost a process ended at once with one message (`runtime.distributed`)."""

  def guarded(argv: list[str]) -> None:
    try:
      main(argv)
    except LeukojaxError as error:
      if _verbose():
        raise
      _fail(command, f"{error}\n(the traceback: rerun with {TRACEBACK_ENV}=1)")
    except Exception as error:  # pylint: disable=broad-except  (re-raised unless a peer process died)
      from leukojax.runtime import distributed  # pylint: disable=g-import-not-at-top  (imports JAX)
      if _verbose() or not distributed.is_peer_failure(error):
        raise
      distributed.exit_after_peer_failure(command, error)

  return guarded


def run(command: str, main: Callable[[list[str]], None]) -> None:
  """`app.run` for a LeukoJAX command: its flags parsed and its errors reported as above."""
  app.run(guard(command, main), flags_parser=parse_flags)
