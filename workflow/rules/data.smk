rule simulate:
    output:
        directory(f"{RESULTS}/{{dataset}}/raw"),
    log:
        f"{RESULTS}/logs/simulate/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/simulate/{{dataset}}.tsv"
    conda:
        "../envs/rfseg.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        kind=lambda wc: DATASETS[wc.dataset]["simulate"]["kind"],
        options=lambda wc: simulate_options(wc.dataset),
        code=CODE["simulate"],
    shell:
        "rfseg simulate {params.kind} {params.options} --threads {threads} --out {output} > {log} 2>&1"


rule preprocess:
    input:
        lambda wc: raw_inputs(wc.dataset),
    output:
        directory(f"{RESULTS}/{{dataset}}/preprocessed"),
    log:
        f"{RESULTS}/logs/preprocess/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/preprocess/{{dataset}}.tsv"
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        source=preprocess_source,
        options=lambda wc: preprocess_options(wc.dataset),
        code=CODE["preprocess"],
    shell:
        "rfseg preprocess {params.source} {params.options} --out {output} > {log} 2>&1"


rule patches:
    input:
        f"{RESULTS}/{{dataset}}/preprocessed",
    output:
        directory(f"{RESULTS}/{{dataset}}/patches"),
    log:
        f"{RESULTS}/logs/patches/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/patches/{{dataset}}.tsv"
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        size=lambda wc: DATASETS[wc.dataset]["patches"]["size"],
        min_particle_px=lambda wc: DATASETS[wc.dataset]["patches"]["min_particle_px"],
        split=lambda wc: split_options(wc.dataset),
        code=CODE["patches"],
    shell:
        "rfseg patches --preprocessed {input} --size {params.size} --min-particle-px {params.min_particle_px}"
        " {params.split} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"
