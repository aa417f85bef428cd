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
