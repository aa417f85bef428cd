#!/usr/bin/env bash
# Install the SLURM site profile (profiles/slurm) as ~/.config/snakemake/slurm (or $XDG_CONFIG_HOME/snakemake/slurm),
# where `snakemake --profile slurm` finds it from any directory. An existing profile is kept (it holds your edits).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${XDG_CONFIG_HOME:-$HOME/.config}/snakemake/slurm"
if [ -e "$target/config.yaml" ]; then
    echo "SLURM profile kept: $target/config.yaml (compare with profiles/slurm/config.yaml)"
else
    mkdir -p "$target"
    cp profiles/slurm/config.yaml "$target/config.yaml"
    echo "SLURM profile installed: $target/config.yaml (edit its EDIT lines: account, partitions)"
fi
