rule scan:
    input:
        model="results/{model}/model",
    output:
        snr="results/{model}/scan/snr.json",
    params:
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
        "snrtune scan {input.model} --out {output.snr} {params.extra} > {log} 2>&1"
