"""``python -m tfprune.sweep``: the command-line main ``tfprune.cli.sweep`` (see its docstring or --help).

Importing this module defines no flag; the command line is imported only when it runs as the main program.
"""

if __name__ == "__main__":
    from tfprune.cli import sweep  # pylint: disable=g-import-not-at-top

    sweep.run()
