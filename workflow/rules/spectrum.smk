rule scan:
    input:
        model=paths.MODEL,
    output:
        snr=paths.SNR,
    log:
        paths.log("scan"),
    benchmark:
        paths.benchmark("scan")
    conda:
        ENV
    threads: lambda w: res(w, "threads")
    resources:
        gpu=lambda w: res(w, "gpus"),
        mem_mb=mem("mem_mb"),
        runtime=runtime("runtime"),
    params:
        env=job_env_param(OFFLINE),
        extra=lambda w: workflow_config.flags(
            method=config["scan"]["method"],
            precision=config["scan"]["precision"],
            device=model_cfg(w)["device"],
            batch_mib=config["scan"]["batch_mib"],
        ),
        version=VERSION,
    shell:
        "{params.env}snrtune scan {input.model:q} --out {output.snr:q} {params.extra} > {log:q} 2>&1"


rule select:
    input:
        snr=paths.SNR,
    output:
        selection=paths.SELECTION,
    log:
        paths.log("select", "t{t}"),
    benchmark:
        paths.benchmark("select", "t{t}")
    conda:
        ENV
    params:
        env=job_env_param(OFFLINE),
        extra=workflow_config.flags(
            types=config["select"]["types"],
            include=config["select"]["include"],
            compat=config["select"]["compat"],
        ),
        version=VERSION,
    shell:
        "{params.env}snrtune select {input.snr:q} --top-percent {wildcards.t} --out {output.selection:q} {params.extra} "
        "> {log:q} 2>&1"


# A control: as many modules per type as the SNR selection at t, chosen by the criterion {kind} (snrtune.criteria;
# random with the run's seed).
rule select_control:
    input:
        snr=paths.SNR,
    output:
        selection=paths.CONTROL_SELECTION,
    log:
        paths.log("select", "t{t}-{kind}-s{seed}"),
    benchmark:
        paths.benchmark("select", "t{t}-{kind}-s{seed}")
    wildcard_constraints:
        kind=paths.one_of(method_registry.control_kinds()),
        seed=paths.SEED_PATTERN,
    conda:
        ENV
    params:
        env=job_env_param(OFFLINE),
        extra=workflow_config.flags(
            types=config["select"]["types"], include=config["select"]["include"]
        ),
        version=VERSION,
    shell:
        "{params.env}snrtune select {input.snr:q} --top-percent {wildcards.t} --criterion {wildcards.kind} --seed {wildcards.seed} "
        "--out {output.selection:q} {params.extra} > {log:q} 2>&1"
