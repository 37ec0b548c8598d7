# Apply the study's models to new micrographs (config section `predict`).


rule simulate_for_predict:
    output:
        directory(f"{RESULTS}/predict/{{name}}/raw"),
    log:
        f"{RESULTS}/logs/predict/{{name}}_simulate.log",
    conda:
        "../envs/rfseg.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        kind=lambda wc: PREDICT["simulate"]["kind"],
        options=lambda wc: simulate_options_for(PREDICT["simulate"]),
        code=CODE["simulate"],
    shell:
        "rfseg simulate {params.kind} {params.options} --threads {threads} --out {output} > {log} 2>&1"


rule predict:
    input:
        summary=f"{RESULTS}/summary.csv",
        models=lambda wc: [f"{d}/model.pt" for d in predict_model_dirs()],
        images=lambda wc: predict_inputs(),
    output:
        directory(f"{RESULTS}/predict/{{name}}/segmented"),
    log:
        f"{RESULTS}/logs/predict/{{name}}.log",
    conda:
        "../envs/rfseg.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=config["compute"]["gpus_per_job"],
    params:
        models=lambda wc: " ".join(predict_model_dirs()),
        images=predict_image_args,
        select=predict_select,
        options=lambda wc: predict_options(),
        code=CODE["predict"],
    shell:
        "rfseg predict {params.models} {params.images} {params.select} {params.options}"
        " --threads {threads} --out {output} > {log} 2>&1"
