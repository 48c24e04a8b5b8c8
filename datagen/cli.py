"""How every command-line tool of the repository (datagen's and kinemask_jax's) meets bad input.

`run(main)` replaces absl's `app.run`:
  - a bad flag (unknown, unparsable, missing, or a config file or override that fails) and a `UsageError`
    or `ConfigError` raised by the tool's checks end with ONE line on stderr, `error: ...`, naming the flag
    or config field, and exit code 2;
  - the errors a tool lists as expected (`expected=`: a missing checkpoint, data that does not match)
    end with one line and exit code 1;
  - `--debug` shows the traceback of either instead.
Tools check their flags and configs before any expensive work (loading checkpoints, generating data), so
a usage error costs no more than the imports.
"""

from __future__ import annotations

import sys

from absl import app, flags

USAGE_EXIT = 2
ERROR_EXIT = 1


class UsageError(ValueError):
  """A flag or config value the tool cannot use; the message names it and what is accepted."""


class ConfigError(UsageError):
  """A config field out of its range; the message starts with `config.<field>:`."""


def require(condition: bool, field: str, message: str) -> None:
  """Raises ConfigError(f"config.{field}: {message}") unless `condition`."""
  if not condition:
    raise ConfigError(f"config.{field}: {message}")


def _one_line(e: BaseException) -> str:
  text = str(e).strip() or type(e).__name__
  if "Traceback (most recent call last)" in text:  # a config file that raised: keep what it said
    head = text.split("Traceback (most recent call last)")[0].strip().rstrip(":")
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    text = f"{head}: {last}" if head else last
  return " ".join(text.split())


def _flag_error(e: BaseException, argv) -> None:
  """Ends a run whose flags could not be read: one line, exit 2 (the traceback with --debug)."""
  if any(a.split("=")[0] in ("--debug", "-debug") for a in argv[1:]):
    raise e
  if isinstance(e, flags.Error):
    message = _one_line(e)
  else:  # ml_collections reports an override of a field the config does not have as AttributeError/KeyError
    name = _one_line(e).strip("\"'")
    culprits = [a for a in argv[1:] if a.startswith("--") and "." in a.split("=")[0] and name in a.split("=")[0]]
    message = (f"{culprits[0] if culprits else 'a config override'}: the config has no field {name!r}"
               if isinstance(e, (AttributeError, KeyError)) else f"a config override: {_one_line(e)}")
  print(f"error: {message}", file=sys.stderr)
  sys.exit(USAGE_EXIT)


FLAG_ERRORS = (flags.Error, AttributeError, KeyError, TypeError, ValueError)


def _parse(argv):
  try:
    return flags.FLAGS(argv)
  except FLAG_ERRORS as e:
    _flag_error(e, argv)


def run(main, expected: tuple[type[BaseException], ...] = (), define=None) -> None:
  """Defines the flags (`define()`, if given), parses them and runs `main(argv)` with the conventions of the
  module docstring. Config-file flags read their default file and its overrides as they are defined, so
  they are defined here, where a bad override also ends with one line."""
  if define is not None:
    try:
      define()
    except FLAG_ERRORS as e:
      _flag_error(e, sys.argv)
  if "debug" not in flags.FLAGS:
    flags.DEFINE_boolean("debug", False, "Show the Python traceback of an error instead of its one line.")

  def wrapped(argv):
    if len(argv) > 1:
      _exit(UsageError(f"unexpected arguments: {argv[1:]} (flags are written --name=value)"), USAGE_EXIT)
    try:
      main(argv)
    except (UsageError, app.UsageError) as e:
      _exit(e, USAGE_EXIT)
    except expected as e:
      _exit(e, ERROR_EXIT)

  app.run(wrapped, flags_parser=_parse)


def _exit(e: BaseException, code: int) -> None:
  if flags.FLAGS.is_parsed() and flags.FLAGS["debug"].value:
    raise e
  print(f"error: {_one_line(e)}", file=sys.stderr)
  sys.exit(code)
