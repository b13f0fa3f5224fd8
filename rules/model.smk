# Stage 2: the pretrained model (trained here, or loaded from the Hub / a local path), and the
# gold standard: the same recipe retrained from scratch on the retain set.


rule pretrain:
    input:
        data=rules.data.output.train,
    output:
        directory("models/pretrained"),
    params:
        tracked=tracked("pretrain"),
    log:
        "logs/pretrain.log",
    benchmark:
        "logs/benchmarks/pretrain.tsv"
    threads: TORCH_THREADS
    resources:
        mem_mb=32000,
        runtime=2880,
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.pretrain --params params.yaml --data {input.data} --out {output} --log {log}"


rule retrain:
    input:
        data=rules.data.output.train,
        forget=rules.forget_set.output.npz,
    output:
        directory("models/retrained"),
    params:
        tracked=tracked("retrain"),
    log:
        "logs/retrain.log",
    benchmark:
        "logs/benchmarks/retrain.tsv"
    threads: TORCH_THREADS
    resources:
        mem_mb=32000,
        runtime=2880,
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.pretrain --params params.yaml --data {input.data} --forget {input.forget} "
        "--out {output} --log {log}"
