rule fetch:
    input:
        lambda w: wc.local_files(model_cfg(w)["source"]),
    output:
        model=directory("results/{model}/model"),
    params:
        source=lambda w: model_cfg(w)["source"],
        extra=lambda w: wc.flags(revision=model_cfg(w)["revision"], allow_pickle=model_cfg(w)["allow_pickle"]),
        version=VERSION,
    conda:
        ENV
    log:
        "logs/{model}/fetch.log",
    benchmark:
        "results/{model}/benchmarks/fetch.tsv"
    resources:
        mem_mb=mem("mem_mb"),
        runtime=runtime("runtime"),
    shell:
        "snrtune fetch {params.source:q} --out {output.model} --name {wildcards.model} {params.extra} > {log} 2>&1"
