"""Comparison of objectives on one corpus: the config, the runs, the cloze yardstick and the report."""
