"""The project's benchmarks and the generator of LAION-shaped parquet (the bundled sample, and
the inputs of every benchmark): run from a checkout (`make bench`, `python -m benchmarks.bench`),
never shipped in the wheel."""
