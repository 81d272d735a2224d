"""`python -m usenetsync_cli` runs the CLI, through the entry point that handles Ctrl-C and SIGTERM at any moment."""

from usenetsync_cli.entry import main

main()
