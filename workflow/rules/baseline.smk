# The Fourier-filter baseline and the overlap of its false negatives with the networks'.


rule fourier:
    input:
        L.patches(DS),
    output:
        directory(L.fourier(DS)),
    log:
        L.log("fourier", DS),
    benchmark:
        L.benchmark("fourier", DS)
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        options=lambda wc: PLAN.fourier_flags(wc.dataset),
        code=CODE["fourier"],
    shell:
        "rfseg fourier --patches {input:q} --dataset {wildcards.dataset} {params.options}"
        " --out {output:q} > {log:q} 2>&1"


rule fn_overlap:
    input:
        fourier=L.fourier(DS),
        networks=lambda wc: eval_metrics(wc.dataset),
    output:
        L.fn_overlap(DS),
    log:
        L.log("fn_overlap", DS),
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        networks=lambda wc: PLAN.eval_dirs(wc.dataset),
        code=CODE["fn-overlap"],
    shell:
        "rfseg fn-overlap --fourier {input.fourier:q} --networks {params.networks:q} --out {output:q}"
        " > {log:q} 2>&1"
