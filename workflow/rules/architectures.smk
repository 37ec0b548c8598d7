rule architectures:
    output:
        f"{RESULTS}/architectures.csv",
    log:
        f"{RESULTS}/logs/architectures.log",
    benchmark:
        f"{RESULTS}/benchmarks/architectures.tsv"
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        blocks=config["architecture_table"]["blocks"],
        max_rf_px=config["architecture_table"]["max_rf_px"],
    shell:
        "rfseg arch-table --blocks {params.blocks} --max-rf-px {params.max_rf_px} --out {output} > {log} 2>&1"
