rule evaluate:
    input:
        model=evaluated_model,
    output:
        eval="results/{model}/eval/{run}.json",
    params:
        tasks=",".join(t["name"] for t in config["evaluate"]["tasks"]),
        extra=evaluate_flags,
        version=VERSION,
    conda:
        ENV
    log:
        "logs/{model}/eval/{run}.log",
    benchmark:
        "results/{model}/benchmarks/eval/{run}.tsv"
    wildcard_constraints:
        run=r"base|[a-z-]+(-t\d+(\.\d+)?)?-s\d+",
    threads: lambda w: res(w, "threads")
    resources:
        gpu=lambda w: res(w, "gpus"),
        mem_mb=mem("mem_mb"),
        runtime=runtime("runtime"),
    shell:
        "snrtune evaluate {input.model} --tasks {params.tasks} --out {output.eval} {params.extra} > {log} 2>&1"
