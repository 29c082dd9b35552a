"""The peer races behind BENCHMARKS.md: run_all.py runs the others and writes results.json and BENCHMARKS.md."""
