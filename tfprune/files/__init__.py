"""What tfprune reads and writes on disk: ``user_model`` (a user's .keras/.h5/SavedModel loaded safely, with the
Keras that wrote it; ``check_prunable``), ``io_utils`` (atomic writes) and ``locks`` (``flock`` locks on output
folders and cache entries)."""
