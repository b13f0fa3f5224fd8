# Stage 5: one job per run of `experiment` in params.yaml: method x seed, and the cells of its sweep.


rule unlearn:
    input:
        data=rules.data.output[0],
        forget=rules.select_forget.output.npz,
        knn=rules.knn.output.npz,
        model=rules.pretrain.output[0],
    output:
        directory("models/{run}"),
    params:
        tracked=lambda w: tracked(f"methods.{Run.parse(w.run).method}"),
    log:
        "logs/unlearn/{run}.log",
    threads: workflow.cores  # torch uses every core: see pipeline.models.device
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.unlearn --params params.yaml --run {wildcards.run} "
        "--data {input.data} --forget {input.forget} --knn {input.knn} --model {input.model} "
        "--out {output} --log {log}"
