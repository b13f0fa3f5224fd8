# Stages 6-8: samples and metrics of every model, and the report over all of them.


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
        knn=rules.knn.output.npz,
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
        "--forget {input.forget} --knn {input.knn} --model-name {wildcards.model} --out {output} --log {log}"


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
        "python -m pipeline.report --metrics {input.metrics} --samples {input.samples} --out-dir report --log {log}"
