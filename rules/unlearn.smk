# Stage 5: one job per method x seed of `experiment` in params.yaml.


rule unlearn:
    input:
        data=rules.data.output[0],
        forget=rules.select_forget.output.npz,
        knn=rules.knn.output.npz,
        model=rules.pretrain.output[0],
    output:
        directory("models/{method}-s{seed}"),
    params:
        tracked=lambda w: tracked(f"methods.{w.method}"),
    log:
        "logs/unlearn/{method}-s{seed}.log",
    threads: workflow.cores  # torch uses every core: see pipeline.models.device
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.unlearn --params params.yaml --method {wildcards.method} --seed {wildcards.seed} "
        "--data {input.data} --forget {input.forget} --knn {input.knn} --model {input.model} "
        "--out {output} --log {log}"
