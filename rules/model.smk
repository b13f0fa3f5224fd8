# Stage 2: the pretrained model (trained here, or loaded from the Hub / a local path).


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
        "python -m pipeline.pretrain --params " + PARAMS + " --data {input.data} --out {output} --log {log}"
