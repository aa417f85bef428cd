"""Stage 1: a standard model directory (fetch, prefetch) and its parameter table."""
