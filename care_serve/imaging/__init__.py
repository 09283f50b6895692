"""Image I/O: decoding, request input kinds and the preprocessing of every task."""
