# Training and evaluation: one job per dataset x architecture x seed.


rule train:
    input:
        L.patches(PART),
    output:
        model=MODEL["weights"],
        meta=MODEL["meta"],
        history=MODEL["history"],
    log:
        L.log("train", PART, f"{ARCH}_seed{SEED}"),
    benchmark:
        L.benchmark("train", PART, f"{ARCH}_seed{SEED}")
    priority: 1  # most of a run's time: trainings start before the evaluations and figures that fill gaps
    conda:
        "../envs/rfseg.yaml"
    threads: lambda wc: PLAN.training(dataset(wc))["threads"]
    resources:
        mem_mb=4000,
        runtime=lambda wc: PLAN.training(dataset(wc))["runtime_min"],
        gpu=config["compute"]["gpus_per_job"],
    params:
        options=lambda wc: PLAN.train_flags(dataset(wc)),
        dataset=dataset,
        # the per-epoch checkpoint is state, not an output: Snakemake keeps it across attempts, so a killed or
        # preempted job resumes from its last finished epoch
        checkpoint=L.checkpoint(PART, ARCH, SEED),
        out=lambda wc, output: str(Path(output.meta).parent),
        code=CODE["train"],
    shell:
        "rfseg train --patches {input:q} --arch {wildcards.arch} --seed {wildcards.seed} {params.options}"
        " --threads {threads} --dataset {params.dataset} --checkpoint {params.checkpoint:q}"
        " --out {params.out:q} > {log:q} 2>&1"


rule evaluate:
    input:
        model=MODEL["weights"],
        meta=MODEL["meta"],
        patches=L.patches(PART),
    output:
        **{k: str(v) for k, v in EVAL.items()},
    log:
        L.log("evaluate", PART, f"{ARCH}_seed{SEED}"),
    benchmark:
        L.benchmark("evaluate", PART, f"{ARCH}_seed{SEED}")
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
        gpu=config["compute"]["gpus_per_job"],
    params:
        options=PLAN.evaluate_flags(),
        model=lambda wc, input: bundle_dir(input),
        out=lambda wc, output: str(Path(output.metrics).parent),
        dataset=dataset,
        code=CODE["evaluate"],
    shell:
        "rfseg evaluate --model {params.model:q} --patches {input.patches:q} --dataset {params.dataset}"
        " {params.options} --threads {threads} --out {params.out:q} > {log:q} 2>&1"


rule evaluate_published:
    input:
        model=lambda wc: bundle_files(
            PLAN.published_bundle(dataset(wc), wc.name, wc.member)
        )["weights"],
        meta=lambda wc: bundle_files(
            PLAN.published_bundle(dataset(wc), wc.name, wc.member)
        )["meta"],
        patches=L.patches(PART),
        preprocessed=lambda wc: L.preprocessed(dataset(wc)),
        sources=lambda wc: PLAN.raw_inputs(dataset(wc)),
    output:
        **{
            k: str(v)
            for k, v in eval_files(
                L.eval_published(PART, "{name}", "{member}")
            ).items()
        },
    log:
        L.log("evaluate_published", PART, "{name}_{member}"),
    benchmark:
        L.benchmark("evaluate_published", PART, "{name}_{member}")
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=config["compute"]["gpus_per_job"],
    params:
        options=PLAN.evaluate_published_flags(),
        model=lambda wc, input: bundle_dir(input),
        out=lambda wc, output: str(Path(output.metrics).parent),
        dataset=dataset,
        code=CODE["evaluate"],
    shell:
        "rfseg evaluate --model {params.model:q} --patches {input.patches:q} --preprocessed {input.preprocessed:q}"
        " --dataset {params.dataset} {params.options} --threads {threads} --out {params.out:q} > {log:q} 2>&1"
