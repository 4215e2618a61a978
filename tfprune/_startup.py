"""Ctrl-C while a tfprune command is still starting (importing TensorFlow takes seconds) ends with one line.

Imported first by the package. When the process is a tfprune command (``python -m tfprune.<main>``, whose package is
imported while ``sys.argv[0]`` is still ``-m``, or a ``tfprune-*`` console script), SIGINT until ``end()`` prints
``<command>: interrupted while starting; nothing was done`` and exits 130 instead of a traceback from inside an
import. As a library (imported by anyone else) it changes nothing.
"""

import os
import signal
import sys

INTERRUPT_EXIT = 130  # 128 + SIGINT, what a shell reports for a process stopped by Ctrl-C
_installed = False


def _is_command():
    argv0 = sys.argv[0] if sys.argv else ""
    return argv0 == "-m" or os.path.basename(argv0).startswith("tfprune-")


def _interrupted(signum, frame):  # pylint: disable=unused-argument
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] != "-m" else "tfprune"
    sys.stderr.write(f"{name}: interrupted while starting; nothing was done\n")
    sys.stderr.flush()
    os._exit(INTERRUPT_EXIT)  # pylint: disable=protected-access  (no cleanup is pending: nothing has started)


def begin():
    """Installs the start-up SIGINT handler when this process is a tfprune command (idempotent)."""
    global _installed  # pylint: disable=global-statement
    if _is_command() and not _installed and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)
        _installed = True


def end():
    """From now on Ctrl-C raises KeyboardInterrupt again (the command's own handling takes over)."""
    global _installed  # pylint: disable=global-statement
    if _installed:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _installed = False


begin()
