"""Benchmarks (``audistill tools bench-*``): each measures one stage and prints a table or one JSON
object."""
