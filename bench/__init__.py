"""Benchmarks, experiments and tools around persist; bench/README.md says what each part is for."""
