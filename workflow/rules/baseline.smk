# The Fourier-filter baseline and the overlap of its false negatives with the networks'.


rule fourier:
    input:
        L.patches(PART),
    output:
        directory(L.fourier(PART)),
    log:
        L.log("fourier", PART),
    benchmark:
        L.benchmark("fourier", PART)
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        options=lambda wc: PLAN.fourier_flags(dataset(wc)),
        dataset=dataset,
        code=CODE["fourier"],
    shell:
        "rfseg fourier --patches {input:q} --dataset {params.dataset} {params.options}"
        " --out {output:q} > {log:q} 2>&1"


rule fn_overlap:
    input:
        fourier=L.fourier(PART),
        networks=lambda wc: eval_metrics(wc.part),
    output:
        L.fn_overlap(PART),
    log:
        L.log("fn_overlap", PART),
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        networks=lambda wc: PLAN.part_eval_dirs(wc.part),
        code=CODE["fn-overlap"],
    shell:
        "rfseg fn-overlap --fourier {input.fourier:q} --networks {params.networks:q} --out {output:q}"
        " > {log:q} 2>&1"
