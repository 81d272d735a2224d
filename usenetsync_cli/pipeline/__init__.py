"""usenetsync pipeline layer (see DESIGN.md §3)."""
