rule fetch:
    input:
        lambda w: workflow_config.local_files(model_cfg(w)["source"]),
    output:
        model=directory(paths.MODEL),
    log:
        paths.log("fetch"),
    benchmark:
        paths.benchmark("fetch")
    conda:
        ENV
    params:
        env=job_env_param(ONLINE),
        source=lambda w: model_cfg(w)["source"],
        extra=lambda w: workflow_config.flags(
            revision=model_cfg(w)["revision"],
            allow_pickle=model_cfg(w)["allow_pickle"],
        ),
        version=VERSION,
    shell:
        "{params.env}snrtune fetch {params.source:q} --out {output.model:q} --name {wildcards.model:q} {params.extra} "
        "> {log:q} 2>&1"


rule prefetch_data:
    output:
        paths.PREFETCH_DATA,
    log:
        paths.log("prefetch", "data", model=None),
    conda:
        ENV
    params:
        env=job_env_param(ONLINE),
        data=lambda w: workflow_config.hub_dataset(config),
        version=VERSION,
    shell:
        "{params.env}snrtune prefetch --data {params.data:q} --out {output:q} > {log:q} 2>&1"


rule prefetch_tasks:
    output:
        paths.PREFETCH_TASKS,
    log:
        paths.log("prefetch", "tasks", model=None),
    conda:
        ENV
    params:
        env=job_env_param(ONLINE),
        tasks=lambda w: ",".join(workflow_config.hub_tasks(config)),
        extra=lambda w: workflow_config.flags(
            include_path=config["evaluate"]["include_path"]
        ),
        version=VERSION,
    shell:
        "{params.env}snrtune prefetch --tasks {params.tasks:q} {params.extra} --out {output:q} > {log:q} 2>&1"
