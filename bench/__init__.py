"""`make bench`: benchmarks over real sockets, printed as tables with their comparisons."""
