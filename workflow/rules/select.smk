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
