"""One module per framework timed by `benchmarks.compare`; see `benchmarks.worker`."""
