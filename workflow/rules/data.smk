# Data stages: simulated demo data, preprocessing, patches.


rule simulate:
    output:
        directory(L.raw(DS)),
    log:
        L.log("simulate", DS),
    benchmark:
        L.benchmark("simulate", DS)
    # every later stage waits on the simulations and they use all the cores a laptop has: run them first, so the
    # short one-core jobs fill the cores at the end (job order only; results do not change)
    priority: 3
    conda:
        "../envs/rfseg.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        kind=lambda wc: DATASETS[wc.dataset]["simulate"]["kind"],
        options=lambda wc: PLAN.simulate_flags(DATASETS[wc.dataset]["simulate"]),
        code=CODE["simulate"],
    shell:
        "rfseg simulate {params.kind} {params.options} --threads {threads} --out {output:q} > {log:q} 2>&1"


rule preprocess:
    input:
        lambda wc: PLAN.raw_inputs(wc.dataset),
    output:
        directory(L.preprocessed(DS)),
    log:
        L.log("preprocess", DS),
    benchmark:
        L.benchmark("preprocess", DS)
    priority: 2
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        source=lambda wc, input: PLAN.preprocess_source(wc.dataset, input[0]),
        options=lambda wc: PLAN.preprocess_flags(wc.dataset),
        # the inputs' content hash when the dataset asks for it (input_checksums: true); empty otherwise
        inputs_sha256=lambda wc: PLAN.input_checksum(wc.dataset),
        code=CODE["preprocess"],
    shell:
        "rfseg preprocess {params.source} {params.options} --out {output:q} > {log:q} 2>&1"


rule patches:
    input:
        lambda wc: L.preprocessed(dataset(wc)),
    output:
        directory(L.patches(PART)),
    log:
        L.log("patches", PART),
    benchmark:
        L.benchmark("patches", PART)
    priority: 2
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        size=lambda wc: DATASETS[dataset(wc)]["patches"]["size"],
        min_particle_px=lambda wc: DATASETS[dataset(wc)]["patches"]["min_particle_px"],
        split=lambda wc: PLAN.split_flags(wc.part),
        dataset=dataset,
        code=CODE["patches"],
    shell:
        "rfseg patches --preprocessed {input:q} --size {params.size} --min-particle-px {params.min_particle_px}"
        " {params.split} --dataset {params.dataset} --out {output:q} > {log:q} 2>&1"
