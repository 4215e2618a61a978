"""``python -m tfprune.train_main``: the command-line main ``tfprune.cli.train`` (see its docstring or --help).

Importing this module defines no flag; the command line is imported only when it runs as the main program.
"""

if __name__ == "__main__":
    from tfprune.cli import train  # pylint: disable=g-import-not-at-top

    train.run()
