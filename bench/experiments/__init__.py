"""One-off experiments, each cited by docs/NOTES.md or docs/statistics.md with the figures it printed."""
