# Stages 1, 3, 4: the training set, the forget set, and the retain set's neighbour index.


rule fetch_mnist:
    output:
        "data/raw/mnist.npz",
    log:
        "logs/fetch_mnist.log",
    benchmark:
        "logs/benchmarks/fetch_mnist.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.data fetch --out {output} --log {log}"


rule data:
    input:
        unpack(data_inputs),
    output:
        train="data/train.npz",
        heldout="data/heldout.npz",
    params:
        # the held-out draw of a folder never takes a file that forget.files names
        tracked=tracked("data"),
        base=base_option,
    log:
        "logs/data.log",
    benchmark:
        "logs/benchmarks/data.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.data build --params params.yaml {params.base}--out {output.train} "
        "--heldout {output.heldout} --log {log}"


rule forget_set:
    input:
        unpack(forget_inputs),
    output:
        npz="data/forget.npz",
        table="data/forget.csv",
        png="data/forget.png",
    params:
        tracked=tracked("forget_set"),
        model=lambda wildcards, input: f"--model {input.model} " if "model" in input.keys() else "",
    log:
        "logs/forget_set.log",
    benchmark:
        "logs/benchmarks/forget_set.tsv"
    threads: TORCH_THREADS if PARAMS["forget"]["strategy"] == "memorized" else 1  # it samples the model
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1 if PARAMS["forget"]["strategy"] == "memorized" else 0,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.forget_set --params params.yaml --data {input.data} {params.model}--out {output.npz} "
        "--table {output.table} --png {output.png} --log {log}"


rule knn:
    input:
        unpack(knn_inputs),
    output:
        index=directory("data/retain_index"),
        npz="data/knn.npz",
        png="data/knn.png",
    params:
        tracked=tracked("knn"),
    log:
        "logs/knn.log",
    benchmark:
        "logs/benchmarks/knn.tsv"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=120,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.stages.knn --params params.yaml --data {input.data} --forget {input.forget} "
        "--index {output.index} --out {output.npz} --png {output.png} --log {log}"
