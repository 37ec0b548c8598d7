rule train:
    input:
        f"{RESULTS}/{{dataset}}/patches",
    output:
        model=f"{RESULTS}/{{dataset}}/models/{{arch}}/seed{{seed}}/model.pt",
        meta=f"{RESULTS}/{{dataset}}/models/{{arch}}/seed{{seed}}/model.json",
        history=f"{RESULTS}/{{dataset}}/models/{{arch}}/seed{{seed}}/history.csv",
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{arch}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}/{{arch}}_seed{{seed}}.tsv"
    conda:
        "../envs/rfseg.yaml"
    threads: lambda wc: dataset_training(wc.dataset)["threads"]
    resources:
        mem_mb=4000,
        runtime=lambda wc: dataset_training(wc.dataset)["runtime_min"],
        gpu=config["compute"]["gpus_per_job"],
    params:
        options=lambda wc: train_options(wc.dataset),
        code=CODE["train"],
    shell:
        "rfseg train --patches {input} --arch {wildcards.arch} --seed {wildcards.seed} {params.options}"
        " --threads {threads} --dataset {wildcards.dataset} --out $(dirname {output.model}) > {log} 2>&1"


rule evaluate:
    input:
        model=rules.train.output.model,
        meta=rules.train.output.meta,
        patches=f"{RESULTS}/{{dataset}}/patches",
    output:
        metrics=f"{RESULTS}/{{dataset}}/eval/{{arch}}/seed{{seed}}/metrics.csv",
        particles=f"{RESULTS}/{{dataset}}/eval/{{arch}}/seed{{seed}}/particles.csv",
        probabilities=f"{RESULTS}/{{dataset}}/eval/{{arch}}/seed{{seed}}/probabilities.tif",
        false_negatives=f"{RESULTS}/{{dataset}}/eval/{{arch}}/seed{{seed}}/false_negatives.tif",
    log:
        f"{RESULTS}/logs/evaluate/{{dataset}}/{{arch}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}/{{arch}}_seed{{seed}}.tsv"
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
        gpu=config["compute"]["gpus_per_job"],
    params:
        tta="--tta" if config["evaluation"]["tta"] else "",
        device=config["compute"]["device"],
        code=CODE["evaluate"],
    shell:
        "rfseg evaluate --model $(dirname {input.model}) --patches {input.patches} --dataset {wildcards.dataset}"
        " {params.tta} --device {params.device} --threads {threads} --out $(dirname {output.metrics}) > {log} 2>&1"


rule aggregate:
    input:
        metrics_files(),
    output:
        rows=f"{RESULTS}/metrics.csv",
        summary=f"{RESULTS}/summary.csv",
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=CODE["aggregate"],
    shell:
        "rfseg aggregate {input} --out-rows {output.rows} --out {output.summary} > {log} 2>&1"
