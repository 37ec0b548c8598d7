# Apply the study's models to new micrographs (config section `predict`).


rule simulate_for_predict:
    output:
        directory(L.predict_raw("{name}")),
    log:
        L.log("predict", "{name}_simulate"),
    priority: 3  # uses every core of a laptop: first, not at the end when one-core jobs could share them
    conda:
        "../envs/rfseg.yaml"
    threads: 2
    resources:
        mem_mb=3000,  # one micrograph per thread: two 1024² HRTEM micrographs peak at 1.75 GB together
        runtime=60,
    params:
        kind=lambda wc: PLAN.predict_cfg["simulate"]["kind"],
        options=lambda wc: PLAN.simulate_flags(PLAN.predict_cfg["simulate"]),
        code=CODE["simulate"],
    shell:
        "rfseg simulate {params.kind} {params.options} --threads {threads} --out {output:q} > {log:q} 2>&1"


rule predict:
    input:
        summary=L.summary(),
        models=lambda wc: [
            str(f)
            for d in PLAN.predict_model_dirs()
            for k, f in bundle_files(d).items()
            if k != "history"
        ],
        images=lambda wc: PLAN.predict_inputs(),
    output:
        directory(L.predict_out("{name}")),
    log:
        L.log("predict", "{name}"),
    conda:
        "../envs/rfseg.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=config["compute"]["gpus_per_job"],
    params:
        models=lambda wc: PLAN.predict_model_dirs(),
        images=lambda wc, input: PLAN.predict_image_args(input.images),
        select=lambda wc, input: PLAN.predict_select(input.summary),
        options=PLAN.predict_flags() if PLAN.predict_cfg else "",
        code=CODE["predict"],
    shell:
        "rfseg predict {params.models:q} {params.images} {params.select} {params.options}"
        " --threads {threads} --out {output:q} > {log:q} 2>&1"
