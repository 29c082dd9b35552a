"""One-off experiments, each cited by docs/journal/ or docs/statistics.md with the figures it printed."""
