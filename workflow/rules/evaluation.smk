rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        eval="results/{model}/eval/{run}.json",
    params:
        env=job_env_param(OFFLINE),
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
        "{params.env}snrtune evaluate {input.model:q} --tasks {params.tasks:q} --out {output.eval:q} {params.extra} "
        "> {log:q} 2>&1"
