# Stages 6-9: samples and metrics of every model (the classifier they use, forgetting over the
# unlearning steps), diagnostics of every unlearning run, relearning attacks, the report, and the
# deletion audit.


rule sample:
    input:
        model="models/{model}",
    output:
        npz="samples/{model}.npz",
        png="samples/{model}.png",
    params:
        tracked=tracked("sample"),
    log:
        "logs/sample/{model}.log",
    benchmark:
        "logs/benchmarks/sample/{model}.tsv"
    threads: TORCH_THREADS
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.sample --params params.yaml --model {input.model} --out {output.npz} "
        "--png {output.png} --log {log}"


rule classifier:
    input:
        data=rules.data.output.train,
        heldout=rules.data.output.heldout,
        forget=rules.forget_set.output.npz,
    output:
        model="models/classifier.pt",
        metrics="metrics/classifier.json",
    params:
        tracked=tracked("classifier"),
    log:
        "logs/classifier.log",
    benchmark:
        "logs/benchmarks/classifier.tsv"
    threads: TORCH_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.classifier --params params.yaml --data {input.data} --forget {input.forget} "
        "--heldout {input.heldout} --out {output.model} --metrics-out {output.metrics} --log {log}"


rule metrics:
    input:
        unpack(classifier_input),
        unpack(model_files("sscd", "inception")),
        samples=rules.sample.output.npz,
        model="models/{model}",
        data=rules.data.output.train,
        heldout=rules.data.output.heldout,
        forget=rules.forget_set.output.npz,
        knn=rules.knn.output.npz,
    output:
        json="metrics/{model}.json",
        npz="metrics/{model}.npz",
    params:
        tracked=tracked("metrics"),
        classifier=classifier_option,
    log:
        "logs/metrics/{model}.log",
    benchmark:
        "logs/benchmarks/metrics/{model}.tsv"
    threads: TORCH_THREADS
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.metrics --params params.yaml --samples {input.samples} --model {input.model} "
        "--data {input.data} --heldout {input.heldout} --forget {input.forget} --knn {input.knn} "
        "{params.classifier}--model-name {wildcards.model} --out {output.json} --npz {output.npz} --log {log}"


rule trajectory:
    input:
        unpack(classifier_input),
        unpack(model_files("inception")),
        model="models/{model}",
        samples=rules.sample.output.npz,
        data=rules.data.output.train,
        forget=rules.forget_set.output.npz,
    output:
        "trajectory/{model}.csv",
    params:
        tracked=tracked("trajectory"),
        classifier=classifier_option,
    log:
        "logs/trajectory/{model}.log",
    benchmark:
        "logs/benchmarks/trajectory/{model}.tsv"
    threads: TORCH_THREADS
    resources:
        mem_mb=16000,
        runtime=480,
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.trajectory --params params.yaml --model {input.model} --model-name {wildcards.model} "
        "--samples {input.samples} --data {input.data} --forget {input.forget} {params.classifier}--out {output} --log {log}"


rule diagnostics:
    input:
        pretrained=rules.pretrain.output[0],
        model="models/{run}",
        data=rules.data.output.train,
        forget=rules.forget_set.output.npz,
    output:
        json="diagnostics/{run}.json",
        png="diagnostics/{run}.png",
    params:
        tracked=tracked("diagnostics"),
    log:
        "logs/diagnostics/{run}.log",
    benchmark:
        "logs/benchmarks/diagnostics/{run}.tsv"
    threads: TORCH_THREADS
    resources:
        mem_mb=16000,
        runtime=120,
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.diagnostics --params params.yaml --pretrained {input.pretrained} --model {input.model} "
        "--model-name {wildcards.run} --data {input.data} --forget {input.forget} --out {output.json} --png {output.png} --log {log}"


rule attack:
    input:
        model="models/{model}",
        data=rules.data.output.train,
        forget=rules.forget_set.output.npz,
        knn=rules.knn.output.npz,
    output:
        "attacks/{model}/{kind}.json",
    params:
        tracked=tracked("attack"),
    log:
        "logs/attack/{model}/{kind}.log",
    benchmark:
        "logs/benchmarks/attack/{model}/{kind}.tsv"
    threads: TORCH_THREADS
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.attack --params params.yaml --model {input.model} --model-name {wildcards.model} "
        "--kind {wildcards.kind} --data {input.data} --forget {input.forget} --knn {input.knn} --out {output} "
        "--log {log}"


rule report:
    input:
        metrics=expand("metrics/{model}.json", model=report_models()),
        probes=expand("metrics/{model}.npz", model=report_models()),
        samples=expand("samples/{model}.npz", model=report_models()),
        trajectories=expand("trajectory/{model}.csv", model=trajectory_models()),
        attacks=attack_outputs(),
        forget=rules.forget_set.output.npz,
        data=rules.data.output.train,
    output:
        report_outputs(flagged=True),
    params:
        tracked=tracked("report"),
    log:
        "logs/report.log",
    benchmark:
        "logs/benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.report --params params.yaml --metrics {input.metrics} --probes {input.probes} "
        "--samples {input.samples} --trajectories {input.trajectories} --attacks {input.attacks} --data {input.data} "
        "--forget {input.forget} --out-dir report --log {log}"


rule audit:
    input:
        unpack(lambda wildcards: {"request": EXTERNAL["request"]} if EXTERNAL["request"] else {}),  # id, date
        metrics=expand("metrics/{model}.json", model=MODELS),
        models=expand("models/{model}", model=MODELS),
        data=rules.data.output.train,
        forget=rules.forget_set.output.npz,
    output:
        json="report/audit.json",
        md="report/audit.md",
    params:
        tracked=tracked("audit"),
    log:
        "logs/audit.log",
    benchmark:
        "logs/benchmarks/audit.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.audit --params params.yaml --metrics {input.metrics} --models {input.models} "
        "--data {input.data} --forget {input.forget} --out {output.json} --md {output.md} --log {log}"


rule requests:
    input:
        metrics=expand("metrics/{model}.json", model=["pretrained", *SEQUENCE]),
        models=expand("models/{model}", model=["pretrained", *SEQUENCE]),
        attacks=sequence_attack_outputs(),
        requests=EXTERNAL["request"],
        forget=rules.forget_set.output.npz,
    output:
        csv="report/requests.csv",
        md="report/requests.md",
        png="report/requests.png",
    params:
        tracked=tracked("requests"),
    log:
        "logs/requests.log",
    benchmark:
        "logs/benchmarks/requests.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.requests --params params.yaml --metrics {input.metrics} --models {input.models} "
        "--attacks {input.attacks} --forget {input.forget} --csv {output.csv} --md {output.md} --png {output.png} "
        "--log {log}"
