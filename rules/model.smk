# Stage 2: the pretrained model (trained here, or loaded from the Hub / a local path), and the
# gold standard: the same recipe retrained from scratch on the retain set.


rule pretrain:
    input:
        data=rules.data.output[0],
    output:
        directory("models/pretrained"),
    params:
        tracked=tracked("model", "pretrain"),
    log:
        "logs/pretrain.log",
    threads: workflow.cores  # torch uses every core: see pipeline.models.device
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.pretrain --params params.yaml --data {input.data} --out {output} --log {log}"


rule retrain:
    input:
        data=rules.data.output[0],
        forget=rules.select_forget.output.npz,
    output:
        directory("models/retrained"),
    params:
        tracked=tracked("model", "pretrain"),
    log:
        "logs/retrain.log",
    threads: workflow.cores  # torch uses every core: see pipeline.models.device
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.pretrain --params params.yaml --data {input.data} --forget {input.forget} "
        "--out {output} --log {log}"
