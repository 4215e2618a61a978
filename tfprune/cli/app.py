"""Shared plumbing of the absl mains: errors as one line (exit 2 for usage, 1 for I/O), Ctrl-C, list validators."""

import contextlib
import sys

from absl import app
from absl import flags

from tfprune.experiments.config import ConfigError

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


@contextlib.contextmanager
def usage_errors():
    """Turns the library's ``ConfigError`` (a setting that cannot work) into ``app.UsageError`` (exit 2)."""
    try:
        yield
    except ConfigError as e:
        raise app.UsageError(str(e)) from None


def _present_as_main(module):
    """``--help`` of a main started through a shim (``python -m tfprune.sweep``) or a console script shows the main's
    docstring and its key flags: absl reads them from ``__main__`` and from the key flags of ``sys.argv[0]``."""
    main = sys.modules.get("__main__")
    if main is not None and main is not module:
        main.__doc__ = module.__doc__
        for flag in FLAGS.get_key_flags_for_module(module.__name__):
            FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run(main, argv=None):
    """``app.run(main)`` with ``_parse_flags_or_exit`` as parser, and one-line endings instead of tracebacks.

    A UsageError (or a ConfigError) from main exits with 2; an OSError (disk full, unwritable file: the message
    names the file) with 1; Ctrl-C with 130 after saying that finished work is kept (every result is written
    atomically). ``argv``: the command line to parse (default ``sys.argv``). ``--help`` shows the docstring and key
    flags of the module defining ``main``.
    """
    _present_as_main(sys.modules[main.__module__])

    def guarded(argv):
        try:
            with usage_errors():
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

    app.run(guarded, argv=argv, flags_parser=_parse_flags_or_exit)


def check_no_arguments(argv):
    """Raises ``app.UsageError`` when positional arguments follow the flags."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")


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
