"""Test tooling shared by all test packages: raw NNTP, the INN fixture, the fault proxy."""
