rule train:
    input:
        unpack(train_inputs),
    output:
        run=directory("results/{model}/runs/{run}"),
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
    threads: lambda w: res(w, "threads")
    resources:
        gpu=train_resource("gpus"),
        mem_mb=train_resource("mem_mb", grow=True),
        runtime=train_resource("runtime", grow=True),
    shell:
        "{params.env}{params.launcher} train {input.model:q} --data {params.data:q} --out {output.run:q} "
        "{params.extra} {params.sharding} > {log:q} 2>&1"
