# A text-to-image experiment (model.kind: text_to_image): the memorized-prompt protocol of the SISS and
# ReTrack codes (docs/methods.md), in place of rules/model.smk, unlearn.smk and evaluate.smk.


rule pretrain_text_to_image:
    input:
        unpack(lambda wildcards: {"data": rules.data.output.train} if PARAMS["model"]["source"] == "train" else {}),
    output:
        directory("models/pretrained"),
    params:
        tracked=tracked("pretrain_text_to_image"),
        data=lambda wildcards, input: f"--data {input.data} " if "data" in input.keys() else "",
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
        "python -m pipeline.stages.pretrain_text_to_image --params params.yaml {params.data}--out {output} --log {log}"


rule generate:
    input:
        unpack(prompt_files),
        model=rules.pretrain_text_to_image.output[0],
    output:
        npz="prompts/{prompt}/generations.npz",
        table="prompts/{prompt}/generations.csv",
        png="prompts/{prompt}/generations.png",
    params:
        tracked=tracked("generate"),
    log:
        "logs/generate/{prompt}.log",
    benchmark:
        "logs/benchmarks/generate/{prompt}.tsv"
    threads: TORCH_THREADS
    resources:
        mem_mb=32000,
        runtime=240,
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.generate --params params.yaml --model {input.model} --prompt {wildcards.prompt} "
        "--out {output.npz} --table {output.table} --png {output.png} --log {log}"


rule unlearn_prompt:
    input:
        unpack(prompt_files),
        model=rules.pretrain_text_to_image.output[0],
        generations=lambda wildcards: run_generations(wildcards.run),
    output:
        directory("models/{run}"),
    params:
        tracked=tracked("unlearn_prompt"),
    log:
        "logs/unlearn/{run}.log",
    benchmark:
        "logs/benchmarks/unlearn/{run}.tsv"
    threads: TORCH_THREADS
    resources:
        mem_mb=64000,
        runtime=720,
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.unlearn_prompt --params params.yaml --run {wildcards.run} --model {input.model} "
        "--generations {input.generations} --out {output} --log {log}"


rule evaluate_pretrained:
    input:
        unpack(prompt_files),
        model=rules.pretrain_text_to_image.output[0],
        generations=expand("prompts/{prompt}/generations.npz", prompt=PROMPTS),
    output:
        json="metrics/pretrained.json",
        samples="samples/pretrained.npz",
        controls="metrics/pretrained_controls.npz",
    params:
        tracked=tracked("evaluate_pretrained"),
    log:
        "logs/evaluate/pretrained.log",
    benchmark:
        "logs/benchmarks/evaluate/pretrained.tsv"
    threads: TORCH_THREADS
    resources:
        mem_mb=32000,
        runtime=240,
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.evaluate_prompt --params params.yaml --model {input.model} "
        "--generations {input.generations} --controls-out {output.controls} --out {output.json} "
        "--samples {output.samples} --log {log}"


rule evaluate_prompt:
    input:
        unpack(prompt_files),
        model="models/{run}",
        generations=lambda wildcards: run_generations(wildcards.run),
        controls=rules.evaluate_pretrained.output.controls,
    output:
        json="metrics/{run}.json",
        samples="samples/{run}.npz",
    params:
        tracked=tracked("evaluate_prompt"),
    log:
        "logs/evaluate/{run}.log",
    benchmark:
        "logs/benchmarks/evaluate/{run}.tsv"
    threads: TORCH_THREADS
    resources:
        mem_mb=32000,
        runtime=240,
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.evaluate_prompt --params params.yaml --model {input.model} "
        "--generations {input.generations} --controls {input.controls} --out {output.json} "
        "--samples {output.samples} --log {log}"


rule report_prompts:
    input:
        metrics=[rules.evaluate_pretrained.output.json, *expand("metrics/{run}.json", run=PROMPT_RUNS)],
        samples=[rules.evaluate_pretrained.output.samples, *expand("samples/{run}.npz", run=PROMPT_RUNS)],
    output:
        md="report/prompts.md",
        csv="report/prompts.csv",
        summary="report/summary.json",
        png="report/prompts.png",
        generations="report/generations.png",
    params:
        tracked=tracked("report_prompts"),
    log:
        "logs/report.log",
    benchmark:
        "logs/benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.report_prompts --params params.yaml --metrics {input.metrics} --out {output.md} "
        "--csv {output.csv} --summary {output.summary} --png {output.png} --samples {input.samples} "
        "--generations {output.generations} --log {log}"
