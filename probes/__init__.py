"""Probes: what "aligned" means. Importing this package registers the suites and scorers."""

from persist.probes import behaviour, choice, external, judge, likelihood, mc_sets, refusal, suites  # noqa: F401
