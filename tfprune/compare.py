"""``python -m tfprune.compare``: the command-line main ``tfprune.cli.compare`` (see its docstring or --help).

Importing this module defines no flag; the command line is imported only when it runs as the main program.
"""

if __name__ == "__main__":
    from tfprune.cli import compare  # pylint: disable=g-import-not-at-top

    compare.run()
