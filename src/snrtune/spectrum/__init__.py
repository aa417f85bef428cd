"""Stage 2: the SNR scan of every weight matrix and the top-t% selection (scan, select)."""
