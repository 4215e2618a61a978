"""``python -m tfprune.fit_budget``: the command-line main ``tfprune.cli.fit_budget`` (see its docstring or --help).

Importing this module defines no flag; the command line is imported only when it runs as the main program.
"""

if __name__ == "__main__":
    from tfprune.cli import fit_budget  # pylint: disable=g-import-not-at-top

    fit_budget.run()
