"""`python -m usenetsync_cli` runs the CLI."""

from usenetsync_cli.cli.app import main

main()
