# Tables and analyses: the architecture family, the aggregated metrics, fingerprints, effective receptive fields.


rule architectures:
    output:
        L.architectures(),
    log:
        L.log("architectures"),
    benchmark:
        L.benchmark("architectures")
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        blocks=config["architecture_table"]["blocks"],
        max_rf_px=config["architecture_table"]["max_rf_px"],
        code=CODE["arch-table"],
    shell:
        "rfseg arch-table --blocks {params.blocks} --max-rf-px {params.max_rf_px} --out {output:q} > {log:q} 2>&1"


rule aggregate:
    input:
        PLAN.metrics_inputs(),
    output:
        rows=L.metrics(),
        summary=L.summary(),
    log:
        L.log("aggregate"),
    benchmark:
        L.benchmark("aggregate")
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        files=PLAN.metrics_files(),
        code=CODE["aggregate"],
    shell:
        "rfseg aggregate {params.files:q} --out-rows {output.rows:q} --out {output.summary:q} > {log:q} 2>&1"


rule paired:
    input:
        patches=lambda wc: [L.patches(p) for p in PLAN.parts(wc.dataset)],
        evals=all_eval_files,
    output:
        paired=report(
            L.paired(DS),
            caption="../report/paired.rst",
            category="Tables",
        ),
        per_micrograph=L.per_micrograph(DS),
    log:
        L.log("paired", DS),
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        evals=lambda wc: all_evals(wc.dataset),
        code=CODE["paired"],
    shell:
        "rfseg paired --dataset {wildcards.dataset} --patches {input.patches:q} --evals {params.evals:q}"
        " --out {output.paired:q} --per-micrograph {output.per_micrograph:q} > {log:q} 2>&1"


rule erf:
    input:
        model=MODEL["weights"],
        meta=MODEL["meta"],
        patches=L.patches(PART),
    output:
        L.erf(PART, ARCH, SEED),
    log:
        L.log("erf", PART, f"{ARCH}_seed{SEED}"),
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        model=lambda wc, input: bundle_dir(input),
        code=CODE["erf"],
    shell:
        "rfseg erf --model {params.model:q} --patches {input.patches:q} --out {output:q} > {log:q} 2>&1"


rule fingerprint:
    input:
        pre=L.preprocessed(DS),
        patches=lambda wc: L.patches(PLAN.first_part(wc.dataset)),
    output:
        report(
            L.fingerprint(DS),
            caption="../report/fingerprint.rst",
            category="Tables",
        ),
    log:
        L.log("fingerprint", DS),
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        material=lambda wc: PLAN.fingerprint_material(wc.dataset),
        options=PLAN.published_flat_field_flag(),
        code=CODE["fingerprint"],
    shell:
        "rfseg fingerprint --preprocessed {input.pre:q} --patches {input.patches:q} --dataset {wildcards.dataset}"
        " --material {params.material} {params.options} --out {output:q} > {log:q} 2>&1"


rule dataset_table:
    input:
        [L.patches(PLAN.first_part(ds)) for ds in DATASETS],
    output:
        report(
            L.dataset_table(),
            caption="../report/datasets.rst",
            category="Tables",
        ),
    log:
        L.log("dataset_table"),
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=CODE["dataset-table"],
    shell:
        "rfseg dataset-table {input:q} --out {output:q} > {log:q} 2>&1"
