rule train:
    input:
        unpack(train_inputs),
    output:
        run=directory("results/{model}/runs/{run}"),
    wildcard_constraints:
        run=one_of([r for r in wc.runs(config) if not wc.swept(config, r)]),
    params:
        env=job_env_param(OFFLINE),
        launcher=launcher,
        strategy=strategy,
        sharding=sharding,
        data=wc.resolve_source(config["data"]["train"]),
        extra=train_flags,
        version=VERSION,
    conda:
        ENV
    log:
        "logs/{model}/train/{run}.log",
    benchmark:
        "results/{model}/benchmarks/train/{run}.tsv"
    threads: train_resource("threads")
    resources:
        gpu=train_resource("gpus"),
        mem_mb=train_resource("mem_mb", grow=True),
        runtime=train_resource("runtime", grow=True),
    shell:
        "{params.env}{params.launcher} train {input.model:q} --data {params.data:q} --out {output.run:q} "
        "{params.extra} {params.sharding} > {log:q} 2>&1"


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
        env=job_env_param(OFFLINE),
        version=VERSION,
    conda:
        ENV
    log:
        "logs/{model}/pick/{run}.log",
    shell:
        "{params.env}snrtune pick {input.candidates:q} --out {output.run:q} > {log:q} 2>&1"


rule merge:
    input:
        run="results/{model}/runs/{run}",
        model="results/{model}/model",
    output:
        merged=directory("results/{model}/merged/{run}"),
    params:
        env=job_env_param(OFFLINE),
        version=VERSION,
    conda:
        ENV
    log:
        "logs/{model}/merge/{run}.log",
    benchmark:
        "results/{model}/benchmarks/merge/{run}.tsv"
    threads: lambda w: res(w, "threads")
    resources:
        mem_mb=mem("mem_mb"),
        runtime=runtime("runtime"),
    shell:
        "{params.env}snrtune merge {input.run:q} --base {input.model:q} --out {output.merged:q} > {log:q} 2>&1"
