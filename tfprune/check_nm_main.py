"""``python -m tfprune.check_nm_main``: the command-line main ``tfprune.cli.check_nm`` (see its docstring or --help).

Importing this module defines no flag; the command line is imported only when it runs as the main program. (It is
not ``tfprune/check_nm.py``: importing a submodule of that name would replace the function ``tfprune.check_nm``.)
"""

if __name__ == "__main__":
    from tfprune.cli import check_nm  # pylint: disable=g-import-not-at-top

    check_nm.run()
