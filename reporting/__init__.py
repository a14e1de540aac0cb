"""Statistics, summary and plots from result records: the ``report`` step of a comparison.

Entry points live in ``reporting.report`` (``write_report``, ``log_report_to_wandb``);
this package import stays free of scipy and matplotlib so the CLI starts quickly.
"""
