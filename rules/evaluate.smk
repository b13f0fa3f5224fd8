# Stages 6-9: samples and metrics of every model, diagnostics of every unlearning run, and the report.


rule sample:
    input:
        model="models/{model}",
    output:
        npz="samples/{model}.npz",
        png="samples/{model}.png",
    params:
        tracked=tracked("sampling"),
    log:
        "logs/sample/{model}.log",
    threads: workflow.cores  # torch uses every core: see pipeline.models.device
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.sampling --params params.yaml --model {input.model} --out {output.npz} "
        "--png {output.png} --log {log}"


rule metrics:
    input:
        samples=rules.sample.output.npz,
        data=rules.data.output[0],
        forget=rules.select_forget.output.npz,
    output:
        "metrics/{model}.json",
    params:
        tracked=tracked("metrics"),
    log:
        "logs/metrics/{model}.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.metrics --params params.yaml --samples {input.samples} --data {input.data} "
        "--forget {input.forget} --model-name {wildcards.model} --out {output} --log {log}"


rule diagnostics:
    input:
        pretrained=rules.pretrain.output[0],
        model="models/{run}",
        data=rules.data.output[0],
        forget=rules.select_forget.output.npz,
    output:
        json="diagnostics/{run}.json",
        png="diagnostics/{run}.png",
    params:
        tracked=tracked("diagnostics"),
    log:
        "logs/diagnostics/{run}.log",
    threads: workflow.cores  # torch uses every core: see pipeline.models.device
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.diagnostics --params params.yaml --pretrained {input.pretrained} --model {input.model} "
        "--data {input.data} --forget {input.forget} --out {output.json} --png {output.png} --log {log}"


rule report:
    input:
        metrics=expand("metrics/{model}.json", model=MODELS),
        samples=expand("samples/{model}.npz", model=MODELS),
    output:
        report_outputs(),
    log:
        "logs/report.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.report --params params.yaml --metrics {input.metrics} --samples {input.samples} "
        "--out-dir report --log {log}"
