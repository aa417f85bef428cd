"""The fixed file names of snrtune's artifacts (docs/artifacts.md), read and written by train, merge,
evaluate and report. Files whose names the user or the workflow chooses (snr.json, sel.yaml, eval.json)
are not here; a model directory's own files (snrtune's and the Hugging Face ones it checks) are in snrtune.model_dir.
"""

# in every directory snrtune writes (fetch, train, pick, merge, report): which command wrote it; a directory
# without it is never removed or replaced by a snrtune command (snrtune.fileio)
OUTPUT_MARKER = "snrtune_output.json"

# a run directory (from `snrtune train`) and a merged model directory (from `snrtune merge`)
RUN_FILE = "snrtune_run.json"  # the run's identity; copied into the merged directory, read by evaluate
METRICS_FILE = "metrics.json"
DELTA_FILE = "spectrum_delta.safetensors"  # the trained tensors of a "spectrum-delta" method
SELECTION_COPY = "selection.yaml"  # the selection a "spectrum-delta" run trained
MODEL_CARD = "README.md"  # in MERGED_DIR (from merge) and REPORT_DIR/MODEL_CARDS_DIR/MODEL/RUN/ (the report's)
CHECKPOINTS_DIR = "checkpoints"  # inside RUN_DIR.partial, for --resume
ROWS_DIR = "rows"  # inside RUN_DIR.partial: the training rows and their tokenization cache
FINGERPRINT_FILE = "fingerprint.json"  # inside RUN_DIR.partial: what the run is, for --resume (docs/checks.md)
ATTEMPTS_FILE = "attempts.json"  # inside RUN_DIR.partial: training seconds of every attempt (GPU-hours)
PARTIAL_SUFFIX = ".partial"  # RUN_DIR.partial: a run being built
TRAINER_PICKLE = "training_args.bin"  # written by transformers' Trainer; removed (the settings are in metrics.json)

# beside a `snrtune select --compat spectrum` YAML: the counts the reference format has no place for
COMPAT_STATS_SUFFIX = ".stats.json"

# a run directory made by `snrtune pick` from the learning-rate sweep's candidates
SWEEP_FILE = "sweep.json"  # the candidates, their validation losses and the pick

# the report directory (from `snrtune report`)
RUNS_TABLE = "runs.csv"
SCORES_TABLE = "scores.csv"  # per model × variant × task: mean over seeds and its 95% CI
COMPARISONS_TABLE = "comparisons.csv"  # the paired comparisons on the target task
SUMMARY = "summary.md"
REPORT_PAGE = "report.html"
MODEL_CARDS_DIR = "model_cards"  # MODEL/RUN/README.md: each merged model's card with its scores
