rule train:
    input:
        unpack(train_inputs),
    output:
        run=directory("results/{model}/runs/{run}"),
    wildcard_constraints:
        run=one_of([r for r in wc.runs(config) if not wc.swept(config, r)]),
    params:
        launcher=lambda w: wc.launcher(res(w, "train_gpus")),
        data=wc.resolve_source(config["data"]["train"]),
        extra=train_flags,
        version=VERSION,
    conda:
        ENV
    log:
        "logs/{model}/train/{run}.log",
    benchmark:
        "results/{model}/benchmarks/train/{run}.tsv"
    threads: lambda w: res(w, "threads")
    resources:
        gpu=lambda w: res(w, "train_gpus"),
        mem_mb=mem("train_mem_mb"),
        runtime=runtime("train_runtime"),
    shell:
        "{params.launcher} train {input.model} --data {params.data:q} --out {output.run} {params.extra} > {log} 2>&1"


# The learning-rate sweep: every candidate trains as its own cached run; `snrtune pick` makes the one with the
# lowest held-out validation loss the run that is merged and evaluated.
use rule train as train_candidate with:
    output:
        run=directory("results/{model}/sweep/{run}/lr{lr}"),
    wildcard_constraints:
        run=one_of([r for r in wc.runs(config) if wc.swept(config, r)]),
        lr=r"[0-9.e+-]+",
    log:
        "logs/{model}/sweep/{run}/lr{lr}.log",
    benchmark:
        "results/{model}/benchmarks/sweep/{run}/lr{lr}.tsv"


rule pick:
    input:
        candidates=lambda w: wc.sweep_candidates(config, w.model, w.run),
    output:
        run=directory("results/{model}/runs/{run}"),
    wildcard_constraints:
        run=one_of([r for r in wc.runs(config) if wc.swept(config, r)]),
    params:
        version=VERSION,
    conda:
        ENV
    log:
        "logs/{model}/pick/{run}.log",
    resources:
        mem_mb=lambda w, attempt: wc.scaled(1000, attempt, GROWTH),
        runtime=lambda w, attempt: wc.scaled(10, attempt, GROWTH),
    shell:
        "snrtune pick {input.candidates} --out {output.run} > {log} 2>&1"
