rule report:
    input:
        **workflow_config.report_inputs(config),
    output:
        report=report(
            directory(paths.REPORT),
            patterns=["{name}.png"],
            caption="../report/report.rst",
            category="Comparison",
        ),
    log:
        paths.log("report", model=None),
    benchmark:
        paths.benchmark("report", model=None)
    conda:
        ENV
    params:
        env=job_env_param(OFFLINE),
        # exactly the files of the current config: stale runs of an earlier config never leak in
        benchmarks=lambda w, input: workflow_config.benchmark_flags(
            config, list(input.benchmarks)
        ),
        flags=workflow_config.report_flags(config),  # report.target_task, report.retention_tasks
        version=VERSION,
    shell:
        "{params.env}snrtune report --files {input.evals:q} {input.runs:q} {input.snr:q} {input.selections:q} "
        "{input.candidates:q} "
        "{params.benchmarks} {params.flags} --out {output.report:q} > {log:q} 2>&1"
