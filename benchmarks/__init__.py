"""Timings of velnet's network (not tests): run as `python -m benchmarks.<name> --help`."""
