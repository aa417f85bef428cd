rule merge:
    input:
        run="results/{model}/runs/{run}",
        model="results/{model}/model",
    output:
        merged=directory("results/{model}/merged/{run}"),
    params:
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
        "snrtune merge {input.run} --base {input.model} --out {output.merged} > {log} 2>&1"
