"""The Snakemake side: config schema and defaults, paths, flags and resource estimates."""
