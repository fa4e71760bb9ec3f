"""Benchmarks and load generators; not part of the installed package (see the Makefile)."""
