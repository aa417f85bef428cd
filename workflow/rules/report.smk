rule report:
    input:
        evals=wc.evaluations(config),
        runs=[f"results/{m}/runs/{r}" for m in config["models"] for r in wc.runs(config)],
    output:
        report=report(directory("results/report"), patterns=["{name}.png"],
                      caption="../report/report.rst", category="Comparison"),
    params:
        version=VERSION,
    conda:
        ENV
    log:
        "logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    resources:
        mem_mb=lambda w, attempt: wc.scaled(4000, attempt, GROWTH),
        runtime=lambda w, attempt: wc.scaled(30, attempt, GROWTH),
    shell:
        "snrtune report results --out {output.report} > {log} 2>&1"
