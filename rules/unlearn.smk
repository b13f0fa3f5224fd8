# Stage 5: one job per run of `experiment` in params.yaml: method x seed, the cells of its sweep, and
# the steps of its sequence of requests (each from the previous step's model).


rule unlearn:
    input:
        data=rules.data.output.train,
        forget=rules.forget_set.output.npz,
        knn=rules.knn.output.npz,
        model=lambda wildcards: f"models/{Run.parse(wildcards.run).previous}",
    output:
        directory("models/{run}"),
    params:
        tracked=tracked("unlearn"),
    log:
        "logs/unlearn/{run}.log",
    benchmark:
        "logs/benchmarks/unlearn/{run}.tsv"
    threads: TORCH_THREADS
    resources:
        mem_mb=32000,
        runtime=720,
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.unlearn --params params.yaml --run {wildcards.run} "
        "--data {input.data} --forget {input.forget} --knn {input.knn} --model {input.model} "
        "--out {output} --log {log}"
