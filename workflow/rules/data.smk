rule simulate:
    output:
        directory(f"{RESULTS}/{{dataset}}/raw"),
    params:
        kind=lambda wc: DATASETS[wc.dataset]["simulate"]["kind"],
        options=lambda wc: simulate_options(wc.dataset),
        code=CODE["simulate"],
    log:
        f"{RESULTS}/logs/simulate/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/simulate/{{dataset}}.tsv"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=60,
    shell:
        "rfseg simulate {params.kind} {params.options} --threads {threads} --out {output} > {log} 2>&1"


def _preprocess_source(wc, input):
    d = DATASETS[wc.dataset]
    if "simulate" in d:
        return f"--manifest {input[0]}/manifest.csv"
    if "manifest" in d:
        return f"--manifest {d['manifest']}"
    return f"--images '{d['images']}' --masks '{d['masks']}'"


rule preprocess:
    input:
        lambda wc: raw_inputs(wc.dataset),
    output:
        directory(f"{RESULTS}/{{dataset}}/preprocessed"),
    params:
        source=_preprocess_source,
        options=lambda wc: preprocess_options(wc.dataset),
        code=CODE["preprocess"],
    log:
        f"{RESULTS}/logs/preprocess/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/preprocess/{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "rfseg preprocess {params.source} {params.options} --out {output} > {log} 2>&1"


rule patches:
    input:
        f"{RESULTS}/{{dataset}}/preprocessed",
    output:
        directory(f"{RESULTS}/{{dataset}}/patches"),
    params:
        size=lambda wc: DATASETS[wc.dataset]["patches"]["size"],
        min_particle_px=lambda wc: DATASETS[wc.dataset]["patches"]["min_particle_px"],
        split=lambda wc: split_options(wc.dataset),
        code=CODE["patches"],
    log:
        f"{RESULTS}/logs/patches/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/patches/{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "rfseg patches --preprocessed {input} --size {params.size} --min-particle-px {params.min_particle_px}"
        " {params.split} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"
