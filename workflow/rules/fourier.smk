rule fourier:
    input:
        f"{RESULTS}/{{dataset}}/patches",
    output:
        metrics=f"{RESULTS}/{{dataset}}/fourier/metrics.csv",
    log:
        f"{RESULTS}/logs/fourier/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fourier/{{dataset}}.tsv"
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        options=lambda wc: fourier_options(wc.dataset),
        code=CODE["fourier"],
    shell:
        "rfseg fourier --patches {input} --dataset {wildcards.dataset} {params.options}"
        " --out $(dirname {output.metrics}) > {log} 2>&1"


rule fn_overlap:
    input:
        fourier=rules.fourier.output.metrics,
        networks=lambda wc: [
            f"{RESULTS}/{wc.dataset}/eval/{a}/seed{s}/metrics.csv"
            for a in architectures(wc.dataset)
            for s in seeds(wc.dataset)
        ],
    output:
        f"{RESULTS}/{{dataset}}/fourier/fn_overlap.csv",
    log:
        f"{RESULTS}/logs/fn_overlap/{{dataset}}.log",
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=CODE["fourier"],
    shell:
        "rfseg fn-overlap --fourier $(dirname {input.fourier})"
        " --networks $(for f in {input.networks}; do dirname $f; done) --out {output} > {log} 2>&1"
