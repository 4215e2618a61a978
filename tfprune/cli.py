"""Shared plumbing of the absl mains: errors as one line (exit 2 for usage, 1 for I/O), Ctrl-C, percent lists."""

import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS
USAGE_EXIT = 2
OS_ERROR_EXIT = 1
INTERRUPT_EXIT = 130  # 128 + SIGINT, what a shell reports for a process stopped by Ctrl-C


def _parse_flags_or_exit(argv):
    """absl's parser, but a bad flag is one line naming flag and value on stderr and exit status 2 (usage error)."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        sys.stderr.write(f"{argv[0]}: error: {e}\nTry --helpfull for the list of flags.\n")
        sys.exit(USAGE_EXIT)


def run(main):
    """``app.run(main)`` with ``_parse_flags_or_exit`` as parser, and one-line endings instead of tracebacks.

    A UsageError from main exits with 2; an OSError (disk full, unwritable file: the message names the file) with
    1; Ctrl-C with 130 after saying that finished work is kept (every result is written atomically).
    """

    def guarded(argv):
        try:
            return main(argv)
        except app.UsageError as e:
            sys.stderr.write(f"{argv[0]}: error: {e}\n")
            sys.exit(USAGE_EXIT)
        except OSError as e:
            sys.stderr.write(f"{argv[0]}: error: {e}\n")
            sys.exit(OS_ERROR_EXIT)
        except KeyboardInterrupt:
            sys.stderr.write(f"{argv[0]}: interrupted; finished work is kept (a sweep continues with --resume)\n")
            sys.exit(INTERRUPT_EXIT)

    app.run(guarded, flags_parser=_parse_flags_or_exit)


def parse_percents(values, flag="--sparsities"):
    """Parses a list of percent strings into floats in [0, 100), in the given order.

    Raises:
      ValueError: naming ``flag`` and the bad value: not a number, outside [0, 100), duplicates, empty list.
    """
    if not values:
        raise ValueError(f"{flag} is empty; give at least one percent, e.g. 0,50,90")
    out = []
    for value in values:
        try:
            k = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{flag}: {value!r} is not a number (percent in [0, 100))") from None
        if not 0.0 <= k < 100.0:
            raise ValueError(f"{flag}: {value} is outside [0, 100) (a percent: 100 would delete every weight)")
        if k in out:
            raise ValueError(f"{flag}: {value} appears twice")
        out.append(k)
    return out


def register_list_validator(name, parse):
    """Registers a validator for a list flag that calls ``parse(values)`` and reports its ValueError."""

    def check(values):
        if values is None:
            return True
        try:
            parse(values)
        except ValueError as e:
            raise flags.ValidationError(str(e)) from None
        return True

    flags.register_validator(name, check)
