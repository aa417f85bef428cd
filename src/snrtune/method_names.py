"""The fine-tuning methods by name: a light module (no torch), read by training and by the workflow's config
logic while Snakemake parses the Snakefile."""

METHODS = ("spectrum", "full", "lora", "qlora", "laser-qlora")
SELECTION_METHODS = ("spectrum", "laser-qlora")  # they train the modules of a selection, so they have a t value
