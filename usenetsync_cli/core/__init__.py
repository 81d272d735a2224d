"""usenetsync core layer (see DESIGN.md §3)."""
