rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        eval=paths.EVAL,
    log:
        paths.log("eval", "{run}"),
    benchmark:
        paths.benchmark("eval", "{run}")
    wildcard_constraints:
        run=paths.EVALUATED_RUN_PATTERN,
    conda:
        ENV
    threads: lambda w: res(w, "threads")
    resources:
        gpu=lambda w: res(w, "gpus"),
        mem_mb=mem("mem_mb"),
        runtime=runtime("runtime"),
    params:
        env=job_env_param(OFFLINE),
        tasks=",".join(t["name"] for t in config["evaluate"]["tasks"]),
        extra=evaluate_flags,
        version=VERSION,
    shell:
        "{params.env}snrtune evaluate {input.model:q} --tasks {params.tasks:q} --out {output.eval:q} {params.extra} "
        "> {log:q} 2>&1"


use rule evaluate as evaluate_candidate with:
    output:
        eval=paths.SWEEP_EVAL,
    log:
        paths.log("eval-candidate", "{run}/lr{lr}"),
    benchmark:
        paths.benchmark("eval-candidate", "{run}/lr{lr}")
    wildcard_constraints:
        run=SWEPT_RUN,
        lr=paths.LR_PATTERN,
