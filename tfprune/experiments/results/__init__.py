"""A study's results on disk and on screen: ``records`` (one finished point, typed and versioned), ``store`` (point
files written atomically, folder configs, locks), ``tables`` (CSV, JSON, Markdown), ``plots`` (PNG, matplotlib Agg)
and ``histograms`` (weight-magnitude histograms)."""
