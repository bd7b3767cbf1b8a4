"""The one base class of every error a user can fix: a bad config, data, workdir or weight file.

Each command prints such an error as one message that says what to do and exits non-zero
(`leukojax.runtime.cli`); anything else is a bug and keeps its traceback.
"""


class LeukojaxError(Exception):
  """A problem with the user's input; the message names it and the fix."""


class ConfigError(LeukojaxError, ValueError):
  """The config asks for something that does not exist or cannot work together."""
