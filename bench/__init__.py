"""The benchmark, load, soak and storm tools: not part of the installable app (bench/README.md)."""
