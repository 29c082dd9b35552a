"""Reports: summaries of records (summary.py) and their renderings."""
