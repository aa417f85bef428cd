rule fetch:
    input:
        lambda w: workflow_config.local_files(model_cfg(w)["source"]),
    output:
        model=directory(paths.MODEL),
    params:
        env=job_env_param(ONLINE),
        source=lambda w: model_cfg(w)["source"],
        extra=lambda w: workflow_config.flags(revision=model_cfg(w)["revision"], allow_pickle=model_cfg(w)["allow_pickle"]),
        version=VERSION,
    conda:
        ENV
    log:
        paths.log("fetch"),
    benchmark:
        paths.benchmark("fetch")
    shell:
        "{params.env}snrtune fetch {params.source:q} --out {output.model:q} --name {wildcards.model:q} {params.extra} "
        "> {log:q} 2>&1"


rule prefetch_data:
    output:
        paths.PREFETCH_DATA,
    params:
        env=job_env_param(ONLINE),
        data=lambda w: workflow_config.hub_dataset(config),
        version=VERSION,
    conda:
        ENV
    log:
        paths.log("prefetch", "data", model=None),
    shell:
        "{params.env}snrtune prefetch --data {params.data:q} --out {output:q} > {log:q} 2>&1"


rule prefetch_tasks:
    output:
        paths.PREFETCH_TASKS,
    params:
        env=job_env_param(ONLINE),
        tasks=lambda w: ",".join(workflow_config.hub_tasks(config)),
        extra=lambda w: workflow_config.flags(include_path=config["evaluate"]["include_path"]),
        version=VERSION,
    conda:
        ENV
    log:
        paths.log("prefetch", "tasks", model=None),
    shell:
        "{params.env}snrtune prefetch --tasks {params.tasks:q} {params.extra} --out {output:q} > {log:q} 2>&1"
