rule train:
    input:
        unpack(train_inputs),
    output:
        run=directory("results/{model}/runs/{run}"),
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
