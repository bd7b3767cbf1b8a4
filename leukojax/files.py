"""Files that several processes of one run read while one of them writes."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any


def write_json_atomically(path: str | os.PathLike[str], record: Any, **dump_kwargs: Any) -> pathlib.Path:
  """Writes `record` as JSON to a temporary file beside `path`, then renames it over `path`.

  A reader (another process of a multi-process run starting at the same moment) sees the old file
  or the new one, never the empty file an in-place rewrite leaves for an instant.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
  tmp.write_text(json.dumps(record, **dump_kwargs))
  os.replace(tmp, path)
  return path
