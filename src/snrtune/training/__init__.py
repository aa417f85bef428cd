"""Stage 3: fine-tuning by method, the learning-rate sweep's pick, and merging (train, pick, merge)."""
