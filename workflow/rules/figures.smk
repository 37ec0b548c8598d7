# Figures of the paper, each from result files only (no model, no GPU), as report() items with captions.
FIG = f"{RESULTS}/figures/{{dataset}}"


rule erf:
    input:
        model=f"{RESULTS}/{{dataset}}/models/{{arch}}/seed{{seed}}/model.pt",
        patches=f"{RESULTS}/{{dataset}}/patches",
    output:
        f"{RESULTS}/{{dataset}}/erf/{{arch}}_seed{{seed}}.tif",
    log:
        f"{RESULTS}/logs/erf/{{dataset}}/{{arch}}_seed{{seed}}.log",
    conda:
        "../envs/rfseg.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        code=CODE["erf"],
    shell:
        "rfseg erf --model $(dirname {input.model}) --patches {input.patches} --out {output} > {log} 2>&1"


rule figure_dice_vs_rf:
    input:
        f"{RESULTS}/metrics.csv",
    output:
        png=report(
            f"{FIG}/dice_vs_rf.png",
            caption="../report/dice_vs_rf.rst",
            category="Dice vs receptive field",
            subcategory="{dataset}",
        ),
        svg=f"{FIG}/dice_vs_rf.svg",
    log:
        f"{RESULTS}/logs/figures/{{dataset}}_dice_vs_rf.log",
    conda:
        "../envs/rfseg.yaml"
    params:
        code=CODE["figures"],
    shell:
        "rfseg figure dice-vs-rf --dataset {wildcards.dataset} --metrics {input} --out {output.png} > {log} 2>&1"


rule figure_sizes:
    input:
        metrics=f"{RESULTS}/metrics.csv",
        particles=lambda wc: eval_files(wc.dataset, "particles.csv"),
    output:
        png=report(
            f"{FIG}/dice_by_size.png",
            caption="../report/dice_by_size.rst",
            category="Dice vs receptive field",
            subcategory="{dataset}",
        ),
        svg=f"{FIG}/dice_by_size.svg",
    log:
        f"{RESULTS}/logs/figures/{{dataset}}_sizes.log",
    conda:
        "../envs/rfseg.yaml"
    params:
        code=CODE["figures"],
    shell:
        "rfseg figure sizes --dataset {wildcards.dataset} --metrics {input.metrics} --particles {input.particles}"
        " --out {output.png} > {log} 2>&1"


rule figure_dilation:
    input:
        f"{RESULTS}/metrics.csv",
    output:
        png=report(
            f"{FIG}/pooling_vs_dilation.png",
            caption="../report/pooling_vs_dilation.rst",
            category="Pooling vs dilation",
            subcategory="{dataset}",
        ),
        svg=f"{FIG}/pooling_vs_dilation.svg",
    log:
        f"{RESULTS}/logs/figures/{{dataset}}_dilation.log",
    conda:
        "../envs/rfseg.yaml"
    params:
        code=CODE["figures"],
    shell:
        "rfseg figure dilation --dataset {wildcards.dataset} --metrics {input} --out {output.png} > {log} 2>&1"


rule figure_edges:
    input:
        patches=f"{RESULTS}/{{dataset}}/patches",
        evals=lambda wc: [
            f"{RESULTS}/{wc.dataset}/eval/{a}/seed{seeds(wc.dataset)[0]}/metrics.csv"
            for a in edge_pair(wc.dataset)
        ],
    output:
        png=report(
            f"{FIG}/edges.png",
            caption="../report/edges.rst",
            category="Pooling vs dilation",
            subcategory="{dataset}",
        ),
        svg=f"{FIG}/edges.svg",
    log:
        f"{RESULTS}/logs/figures/{{dataset}}_edges.log",
    conda:
        "../envs/rfseg.yaml"
    params:
        code=CODE["figures"],
    shell:
        "rfseg figure edges --dataset {wildcards.dataset} --patches {input.patches}"
        " --evals $(for f in {input.evals}; do dirname $f; done) --out {output.png} > {log} 2>&1"


rule figure_examples:
    input:
        patches=f"{RESULTS}/{{dataset}}/patches",
        evals=lambda wc: example_evals(wc.dataset),
    output:
        png=report(
            f"{FIG}/examples.png",
            caption="../report/examples.rst",
            category="Example segmentations",
            subcategory="{dataset}",
        ),
        svg=f"{FIG}/examples.svg",
    log:
        f"{RESULTS}/logs/figures/{{dataset}}_examples.log",
    conda:
        "../envs/rfseg.yaml"
    params:
        code=CODE["figures"],
    shell:
        "rfseg figure examples --dataset {wildcards.dataset} --patches {input.patches}"
        " --evals $(for f in {input.evals}; do dirname $f; done) --out {output.png} > {log} 2>&1"


rule figure_false_negatives:
    input:
        patches=f"{RESULTS}/{{dataset}}/patches",
        fourier=f"{RESULTS}/{{dataset}}/fourier/metrics.csv",
        overlap=f"{RESULTS}/{{dataset}}/fourier/fn_overlap.csv",
        evals=lambda wc: example_evals(wc.dataset),
    output:
        maps=report(
            f"{FIG}/false_negatives.png",
            caption="../report/false_negatives.rst",
            category="False negatives vs Fourier filtering",
            subcategory="{dataset}",
        ),
        maps_svg=f"{FIG}/false_negatives.svg",
        overlap=report(
            f"{FIG}/fn_overlap.png",
            caption="../report/fn_overlap.rst",
            category="False negatives vs Fourier filtering",
            subcategory="{dataset}",
        ),
        overlap_svg=f"{FIG}/fn_overlap.svg",
    log:
        f"{RESULTS}/logs/figures/{{dataset}}_false_negatives.log",
    conda:
        "../envs/rfseg.yaml"
    params:
        code=CODE["figures"],
    shell:
        "(rfseg figure false-negatives --dataset {wildcards.dataset} --patches {input.patches}"
        " --fourier $(dirname {input.fourier}) --evals $(for f in {input.evals}; do dirname $f; done)"
        " --out {output.maps} && rfseg figure fn-overlap --dataset {wildcards.dataset}"
        " --fn-overlap {input.overlap} --out {output.overlap}) > {log} 2>&1"


rule figure_curves:
    input:
        lambda wc: [f"{d}/history.csv" for d in model_dirs(wc.dataset)],
    output:
        png=report(
            f"{FIG}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training curves",
            subcategory="{dataset}",
        ),
        svg=f"{FIG}/training_curves.svg",
    log:
        f"{RESULTS}/logs/figures/{{dataset}}_curves.log",
    conda:
        "../envs/rfseg.yaml"
    params:
        code=CODE["figures"],
    shell:
        "rfseg figure curves --dataset {wildcards.dataset} --histories {input} --out {output.png} > {log} 2>&1"


rule figure_erf:
    input:
        erfs=lambda wc: [
            f"{RESULTS}/{wc.dataset}/erf/{a}_seed{seeds(wc.dataset)[0]}.tif"
            for a in architectures(wc.dataset)
        ],
        models=lambda wc: [
            f"{RESULTS}/{wc.dataset}/models/{a}/seed{seeds(wc.dataset)[0]}/model.json"
            for a in architectures(wc.dataset)
        ],
    output:
        png=report(
            f"{FIG}/effective_rf.png",
            caption="../report/effective_rf.rst",
            category="Effective receptive field",
            subcategory="{dataset}",
        ),
        svg=f"{FIG}/effective_rf.svg",
    log:
        f"{RESULTS}/logs/figures/{{dataset}}_erf.log",
    conda:
        "../envs/rfseg.yaml"
    params:
        code=CODE["figures"],
    shell:
        "rfseg figure erf --dataset {wildcards.dataset} --erfs {input.erfs} --models {input.models}"
        " --out {output.png} > {log} 2>&1"


rule dataset_table:
    input:
        [f"{RESULTS}/{ds}/patches" for ds in DATASETS],
    output:
        report(
            f"{RESULTS}/tables/datasets.csv",
            caption="../report/datasets.rst",
            category="Tables",
        ),
    log:
        f"{RESULTS}/logs/figures/dataset_table.log",
    conda:
        "../envs/rfseg.yaml"
    params:
        code=CODE["figures"],
    shell:
        "rfseg dataset-table {input} --out {output} > {log} 2>&1"


rule fingerprint:
    input:
        pre=f"{RESULTS}/{{dataset}}/preprocessed",
        patches=f"{RESULTS}/{{dataset}}/patches",
    output:
        report(
            f"{RESULTS}/{{dataset}}/fingerprint.csv",
            caption="../report/fingerprint.rst",
            category="Tables",
        ),
    log:
        f"{RESULTS}/logs/fingerprint/{{dataset}}.log",
    conda:
        "../envs/rfseg.yaml"
    params:
        material=lambda wc: DATASETS[wc.dataset]
        .get("fourier", {})
        .get("material", "Au"),
        code=CODE["fingerprint"],
    shell:
        "rfseg fingerprint --preprocessed {input.pre} --patches {input.patches} --dataset {wildcards.dataset}"
        " --material {params.material} --out {output} > {log} 2>&1"


rule figure_series:
    input:
        metrics=f"{RESULTS}/metrics.csv",
        fingerprints=[f"{RESULTS}/{ds}/fingerprint.csv" for ds in DATASETS],
    output:
        png=report(
            f"{RESULTS}/figures/series.png",
            caption="../report/series.rst",
            category="Simulated series",
        ),
        svg=f"{RESULTS}/figures/series.svg",
    log:
        f"{RESULTS}/logs/figures/series.log",
    conda:
        "../envs/rfseg.yaml"
    params:
        code=CODE["figures"],
    shell:
        "rfseg figure series --dataset all --metrics {input.metrics} --fingerprints {input.fingerprints}"
        " --out {output.png} > {log} 2>&1"
