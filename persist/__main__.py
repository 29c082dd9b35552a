"""`python -m persist ...` is the `persist` command."""

from persist.cli import main

main()
