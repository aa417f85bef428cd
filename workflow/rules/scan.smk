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
