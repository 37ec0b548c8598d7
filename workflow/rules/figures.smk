# Figures of the paper, each from result files only (no model weights), as report() items with captions.


rule figure_dice_vs_rf:
    input:
        L.metrics(),
    output:
        png=figure("dice_vs_rf", "Dice vs receptive field"),
        svg=L.figure(DS, "dice_vs_rf", "svg"),
    log:
        L.log("figures", f"{DS}_dice_vs_rf"),
    conda:
        "../envs/rfseg.yaml"
    params:
        code=CODE["figure"],
    shell:
        "rfseg figure dice-vs-rf --dataset {wildcards.dataset} --metrics {input:q} --out {output.png:q} > {log:q} 2>&1"


rule figure_sizes:
    input:
        metrics=L.metrics(),
        particles=lambda wc: [
            str(eval_files(d)["particles"])
            for d in PLAN.eval_dirs(wc.dataset)  # every fold
        ],
    output:
        png=figure("dice_by_size", "Dice vs receptive field"),
        svg=L.figure(DS, "dice_by_size", "svg"),
    log:
        L.log("figures", f"{DS}_sizes"),
    conda:
        "../envs/rfseg.yaml"
    params:
        code=CODE["figure"],
    shell:
        "rfseg figure sizes --dataset {wildcards.dataset} --metrics {input.metrics:q} --particles {input.particles:q}"
        " --out {output.png:q} > {log:q} 2>&1"


rule figure_dilation:
    input:
        L.metrics(),
    output:
        png=figure("pooling_vs_dilation", "Pooling vs dilation"),
        svg=L.figure(DS, "pooling_vs_dilation", "svg"),
    log:
        L.log("figures", f"{DS}_dilation"),
    conda:
        "../envs/rfseg.yaml"
    params:
        code=CODE["figure"],
    shell:
        "rfseg figure dilation --dataset {wildcards.dataset} --metrics {input:q} --out {output.png:q} > {log:q} 2>&1"


rule figure_edges:
    input:
        patches=lambda wc: L.patches(PLAN.first_part(wc.dataset)),
        evals=lambda wc: [
            str(v)
            for a in PLAN.edge_pair(wc.dataset)
            for k, v in eval_files(
                L.eval(PLAN.first_part(wc.dataset), a, PLAN.seeds(wc.dataset)[0])
            ).items()
            if k in ("metrics", "probabilities")
        ],
    output:
        png=figure("edges", "Pooling vs dilation"),
        svg=L.figure(DS, "edges", "svg"),
    log:
        L.log("figures", f"{DS}_edges"),
    conda:
        "../envs/rfseg.yaml"
    params:
        evals=lambda wc: [
            L.eval(PLAN.first_part(wc.dataset), a, PLAN.seeds(wc.dataset)[0])
            for a in PLAN.edge_pair(wc.dataset)
        ],
        code=CODE["figure"],
    shell:
        "rfseg figure edges --dataset {wildcards.dataset} --patches {input.patches:q} --evals {params.evals:q}"
        " --out {output.png:q} > {log:q} 2>&1"


rule figure_examples:
    input:
        patches=lambda wc: L.patches(PLAN.first_part(wc.dataset)),
        evals=example_eval_files,
    output:
        png=figure("examples", "Example segmentations"),
        svg=L.figure(DS, "examples", "svg"),
    log:
        L.log("figures", f"{DS}_examples"),
    conda:
        "../envs/rfseg.yaml"
    params:
        evals=lambda wc: PLAN.example_evals(wc.dataset),
        code=CODE["figure"],
    shell:
        "rfseg figure examples --dataset {wildcards.dataset} --patches {input.patches:q} --evals {params.evals:q}"
        " --out {output.png:q} > {log:q} 2>&1"


rule figure_false_negatives:
    input:
        patches=lambda wc: L.patches(PLAN.first_part(wc.dataset)),
        fourier=lambda wc: L.fourier(PLAN.first_part(wc.dataset)),
        overlap=lambda wc: L.fn_overlap(PLAN.first_part(wc.dataset)),
        evals=example_eval_files,
    output:
        maps=figure("false_negatives", "False negatives vs Fourier filtering"),
        maps_svg=L.figure(DS, "false_negatives", "svg"),
        overlap=figure("fn_overlap", "False negatives vs Fourier filtering"),
        overlap_svg=L.figure(DS, "fn_overlap", "svg"),
    log:
        L.log("figures", f"{DS}_false_negatives"),
    conda:
        "../envs/rfseg.yaml"
    params:
        evals=lambda wc: PLAN.example_evals(wc.dataset),
        code=CODE["figure"],
    shell:
        "(rfseg figure false-negatives --dataset {wildcards.dataset} --patches {input.patches:q}"
        " --fourier {input.fourier:q} --evals {params.evals:q} --out {output.maps:q}"
        " && rfseg figure fn-overlap --dataset {wildcards.dataset} --fn-overlap {input.overlap:q}"
        " --out {output.overlap:q}) > {log:q} 2>&1"


rule figure_curves:
    input:
        history=lambda wc: model_files(
            PLAN.first_models(wc.dataset, all_seeds=True), "history"
        ),
        meta=lambda wc: model_files(
            PLAN.first_models(wc.dataset, all_seeds=True), "meta"
        ),
    output:
        png=figure("training_curves", "Training curves"),
        svg=L.figure(DS, "training_curves", "svg"),
    log:
        L.log("figures", f"{DS}_curves"),
    conda:
        "../envs/rfseg.yaml"
    params:
        models=lambda wc: PLAN.first_models(wc.dataset, all_seeds=True),
        code=CODE["figure"],
    shell:
        "rfseg figure curves --dataset {wildcards.dataset} --models {params.models:q} --out {output.png:q}"
        " > {log:q} 2>&1"


rule figure_erf:
    input:
        erfs=lambda wc: [
            L.erf(PLAN.first_part(wc.dataset), a, PLAN.seeds(wc.dataset)[0])
            for a in PLAN.architectures(wc.dataset)
        ],
        meta=lambda wc: model_files(PLAN.first_models(wc.dataset), "meta"),
    output:
        png=figure("effective_rf", "Effective receptive field"),
        svg=L.figure(DS, "effective_rf", "svg"),
    log:
        L.log("figures", f"{DS}_erf"),
    conda:
        "../envs/rfseg.yaml"
    params:
        models=lambda wc: PLAN.first_models(wc.dataset),
        code=CODE["figure"],
    shell:
        "rfseg figure erf --dataset {wildcards.dataset} --erfs {input.erfs:q} --models {params.models:q}"
        " --out {output.png:q} > {log:q} 2>&1"


rule figure_series:
    input:
        fingerprints=[L.fingerprint(ds) for ds in DATASETS],
        paired=[L.paired(ds) for ds in DATASETS],
    output:
        png=report(
            L.series_figure(),
            caption="../report/series.rst",
            category="Simulated series",
        ),
        svg=L.series_figure("svg"),
    log:
        L.log("figures", "series"),
    conda:
        "../envs/rfseg.yaml"
    params:
        code=CODE["figure"],
    shell:
        "rfseg figure series --dataset all --fingerprints {input.fingerprints:q}"
        " --paired {input.paired:q} --out {output.png:q} > {log:q} 2>&1"
