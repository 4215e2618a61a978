"""The command line: absl flags and the mains (sweep, compare, sensitivity, export, train), the only code that
defines or reads ``FLAGS``. Each main turns its flags into a config dataclass of ``tfprune.experiments`` and calls
the library; errors end as one line with exit status 2 (usage) or 1 (I/O) (``app.run``).

Shared flags are defined once, in the module that owns them (``data_flags``, ``baseline_flags``,
``model_path_flags``, ``pruning_flags``, ``distribute_flags``, ``export_flags``); a main imports the ones it uses
and adopts them as its key flags.
"""
