rule train:
    input:
        unpack(train_inputs),
    output:
        run=directory(paths.RUN),
    log:
        paths.log("train", "{run}"),
    benchmark:
        paths.benchmark("train", "{run}")
    wildcard_constraints:
        run=UNSWEPT_RUN,
    conda:
        ENV
    threads: train_resource("threads")
    resources:
        gpu=train_resource("gpus"),
        nodes=1,  # torchrun --standalone: every GPU of a job on one node (the pre-flight caps train_gpus)
        mem_mb=train_resource("mem_mb", grow=True),
        runtime=train_resource("runtime", grow=True),
    params:
        env=job_env_param(OFFLINE),
        launcher=launcher,
        strategy=strategy,
        sharding=sharding,
        data=workflow_config.resolve_source(config["data"]["train"]),
        extra=train_flags,
        version=VERSION,
    # Snakemake empties the log before every attempt; LOG.attempts (not a declared file) keeps the output of all
    # of them, a requeued or retried job's first one included (unbuffered: a killed attempt's last lines too).
    shell:
        "export PYTHONUNBUFFERED=1; {params.env}{params.launcher} train {input.model:q} --data {params.data:q} "
        "--out {output.run:q} {params.extra} {params.sharding} 2>&1 | tee -a {log:q}.attempts > {log:q}"


# The learning-rate sweep: every candidate trains as its own cached run; `snrtune pick` makes the one with the
# lowest held-out validation loss the run that is merged and evaluated.
use rule train as train_candidate with:
    output:
        run=directory(paths.SWEEP_CANDIDATE),
    log:
        paths.log("sweep", "{run}/lr{lr}"),
    benchmark:
        paths.benchmark("sweep", "{run}/lr{lr}")
    wildcard_constraints:
        run=SWEPT_RUN,
        lr=paths.LR_PATTERN,


rule pick:
    input:
        candidates=lambda w: workflow_config.sweep_candidates(config, w.model, w.run),
    output:
        run=directory(paths.RUN),
    log:
        paths.log("pick", "{run}"),
    wildcard_constraints:
        run=SWEPT_RUN,
    conda:
        ENV
    params:
        env=job_env_param(OFFLINE),
        version=VERSION,
    shell:
        "{params.env}snrtune pick {input.candidates:q} --out {output.run:q} > {log:q} 2>&1"


rule merge:
    input:
        run=paths.RUN,
        model=paths.MODEL,
    output:
        merged=directory(paths.MERGED),
    log:
        paths.log("merge", "{run}"),
    benchmark:
        paths.benchmark("merge", "{run}")
    conda:
        ENV
    threads: lambda w: res(w, "threads")
    resources:
        mem_mb=mem("mem_mb"),
        runtime=runtime("runtime"),
    params:
        env=job_env_param(OFFLINE),
        candidate=lambda w: "--sweep-candidate" if "lr" in w.keys() else "",
        version=VERSION,
    shell:
        "{params.env}snrtune merge {input.run:q} --base {input.model:q} --out {output.merged:q} {params.candidate} "
        "> {log:q} 2>&1"


# evaluate.sweep_candidates: every candidate is merged (its identity marked with its learning rate) and evaluated
# too, for the report's learning–forgetting plot; only the picked run is ranked.
use rule merge as merge_candidate with:
    input:
        run=paths.SWEEP_CANDIDATE,
        model=paths.MODEL,
    output:
        merged=directory(paths.SWEEP_MERGED),
    log:
        paths.log("merge-candidate", "{run}/lr{lr}"),
    benchmark:
        paths.benchmark("merge-candidate", "{run}/lr{lr}")
    wildcard_constraints:
        run=SWEPT_RUN,
        lr=paths.LR_PATTERN,
