rule scan:
    input:
        model="results/{model}/model",
    output:
        snr="results/{model}/scan/snr.json",
    params:
        env=job_env_param(OFFLINE),
        extra=lambda w: wc.flags(method=config["scan"]["method"], precision=config["scan"]["precision"],
                                 device=model_cfg(w)["device"], batch_mib=config["scan"]["batch_mib"]),
        version=VERSION,
    conda:
        ENV
    log:
        "logs/{model}/scan.log",
    benchmark:
        "results/{model}/benchmarks/scan.tsv"
    threads: lambda w: res(w, "threads")
    resources:
        gpu=lambda w: res(w, "gpus"),
        mem_mb=mem("mem_mb"),
        runtime=runtime("runtime"),
    shell:
        "{params.env}snrtune scan {input.model:q} --out {output.snr:q} {params.extra} > {log:q} 2>&1"


rule select:
    input:
        snr="results/{model}/scan/snr.json",
    output:
        selection="results/{model}/select/t{t}.yaml",
    params:
        env=job_env_param(OFFLINE),
        extra=wc.flags(types=config["select"]["types"], include=config["select"]["include"],
                       compat=config["select"]["compat"]),
        version=VERSION,
    conda:
        ENV
    log:
        "logs/{model}/select/t{t}.log",
    benchmark:
        "results/{model}/benchmarks/select/t{t}.tsv"
    shell:
        "{params.env}snrtune select {input.snr:q} --top-percent {wildcards.t} --out {output.selection:q} {params.extra} "
        "> {log:q} 2>&1"


# A control: as many modules per type as the SNR selection at t, chosen at random with the run's seed.
rule select_control:
    input:
        snr="results/{model}/scan/snr.json",
    output:
        selection="results/{model}/select/t{t}-{kind}-s{seed}.yaml",
    wildcard_constraints:
        kind="random",
        seed=r"\d+",
    params:
        env=job_env_param(OFFLINE),
        extra=wc.flags(types=config["select"]["types"], include=config["select"]["include"]),
        version=VERSION,
    conda:
        ENV
    log:
        "logs/{model}/select/t{t}-{kind}-s{seed}.log",
    benchmark:
        "results/{model}/benchmarks/select/t{t}-{kind}-s{seed}.tsv"
    shell:
        "{params.env}snrtune select {input.snr:q} --top-percent {wildcards.t} --{wildcards.kind} --seed {wildcards.seed} "
        "--out {output.selection:q} {params.extra} > {log:q} 2>&1"
