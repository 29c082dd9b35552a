"""Probes: what "aligned" means. Importing this package registers the suites and scorers."""

from persist.probes import judge, likelihood, refusal, suites  # noqa: F401
