"""Shared plumbing of the absl mains: errors as one line (exit 2 for usage, 1 for I/O), Ctrl-C, list validators."""

import contextlib
import math
import os
import signal
import sys

from absl import app
from absl import flags

from tfprune import _startup
from tfprune.experiments.config import ConfigError
from tfprune.experiments.data.builtin import DatasetError
from tfprune.experiments.results.records import RecordError

FLAGS = flags.FLAGS
USAGE_EXIT = 2
OS_ERROR_EXIT = 1
INTERRUPT_EXIT = _startup.INTERRUPT_EXIT  # 128 + SIGINT, what a shell reports for a process stopped by Ctrl-C
TERMINATE_EXIT = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that every cleanup (temp files) runs the same way."""


def _raise_terminated(signum, frame):  # pylint: disable=unused-argument
    raise Terminated()


def _flagfile_names(args):
    """The file names of the ``--flagfile`` directives in ``args`` (``--flagfile=F``, ``--flagfile F``, one dash too,
    as absl reads them)."""
    names = []
    for i, arg in enumerate(args):
        if arg in ("--flagfile", "-flagfile") and i + 1 < len(args):
            names.append(args[i + 1])
        elif arg.startswith(("--flagfile=", "-flagfile=")):
            names.append(arg.split("=", 1)[1])
    return [n for n in names if n]


def flagfile_cycle(args, chain=()):
    """The chain of flagfile names ``[a, b, a]`` in which a flagfile of ``args`` includes itself, or None.

    Files are opened as absl opens them (relative to the working directory, ``~`` expanded) and compared by their
    real path; one that cannot be read is left to absl's own error."""
    for name in _flagfile_names(args):
        path = os.path.expanduser(name)
        if os.path.realpath(path) in [os.path.realpath(os.path.expanduser(n)) for n in chain]:
            return list(chain) + [name]
        try:
            with open(path, encoding="utf-8") as f:
                lines = [line.strip() for line in f]
        except (OSError, UnicodeDecodeError):
            continue
        found = flagfile_cycle([l for l in lines if l and not l.startswith(("#", "//"))], chain + (name,))
        if found:
            return found
    return None


def _parse_flags_or_exit(argv):
    """absl's parser, but a bad flag is one line naming flag and value on stderr and exit status 2 (usage error);
    so is a flagfile that includes itself (absl only warns, then runs without it)."""
    cycle = flagfile_cycle(argv[1:])
    if cycle:
        sys.stderr.write(f"{argv[0]}: error: --flagfile: {' -> '.join(cycle)}: a flagfile includes itself\n"
                         "Try --helpfull for the list of flags.\n")
        sys.exit(USAGE_EXIT)
    try:
        return FLAGS(argv)
    except flags.Error as e:
        sys.stderr.write(f"{argv[0]}: error: {e}\nTry --helpfull for the list of flags.\n")
        sys.exit(USAGE_EXIT)
    except UnicodeDecodeError as e:  # absl reads flagfiles as UTF-8 text
        files = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("--flagfile=")]
        sys.stderr.write(f"{argv[0]}: error: --flagfile {', '.join(files) or '?'}: not a text file of flags "
                         f"({e.reason} at byte {e.start})\nTry --helpfull for the list of flags.\n")
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
    _startup.end()  # from here Ctrl-C raises KeyboardInterrupt: cleanups run, then the line below
    signal.signal(signal.SIGTERM, _raise_terminated)

    def guarded(argv):
        try:
            with usage_errors():
                return main(argv)
        except app.UsageError as e:
            sys.stderr.write(f"{argv[0]}: error: {e}\n")
            sys.exit(USAGE_EXIT)
        except (OSError, DatasetError, RecordError) as e:  # a file that cannot be written or read: I/O
            sys.stderr.write(f"{argv[0]}: error: {e}\n")
            sys.exit(OS_ERROR_EXIT)
        except KeyboardInterrupt as e:
            what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            sys.stderr.write(f"{argv[0]}: {what}; finished work is kept (a sweep continues with --resume)\n")
            sys.exit(TERMINATE_EXIT if isinstance(e, Terminated) else INTERRUPT_EXIT)

    app.run(guarded, argv=argv, flags_parser=_parse_flags_or_exit)


def check_no_arguments(argv):
    """Raises ``app.UsageError`` when positional arguments follow the flags."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")


def register_finite(*names):
    """Validators refusing NaN and infinity for float flags (absl's bounds let NaN through: every comparison with
    NaN is false)."""
    for name in names:
        flags.register_validator(name, lambda v: v is None or math.isfinite(v),
                                 message=f"--{name} must be a finite number (not NaN or infinity)")


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
