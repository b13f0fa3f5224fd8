# Stages 1, 3, 4: the training set, the forget set, and the retain set's neighbour index.


rule fetch_mnist:
    output:
        "data/raw/mnist.npz",
    log:
        "logs/fetch_mnist.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.data fetch --out {output} --log {log}"


def data_inputs(wildcards):
    """The base images (MNIST, or the image folder) and the forget images given as files."""
    source = config["data"]["source"]
    base = rules.fetch_mnist.output[0] if source["kind"] == "mnist" else source["path"]
    files = [item["image"] for item in config["data"]["inject"] if item["image"] != "tshirt"]
    return {"base": base, "forget_images": files}


rule data:
    input:
        unpack(data_inputs),
    output:
        "data/train.npz",
    params:
        tracked=tracked("data"),
    log:
        "logs/data.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.data build --params " + PARAMS + " --base {input.base} --out {output} --log {log}"


rule select_forget:
    input:
        data=rules.data.output[0],
    output:
        npz="data/forget.npz",
        png="data/forget.png",
    params:
        tracked=tracked("forget"),
    log:
        "logs/select_forget.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.forget --params " + PARAMS + " --data {input.data} --out {output.npz} "
        "--png {output.png} --log {log}"


rule knn:
    input:
        data=rules.data.output[0],
        forget=rules.select_forget.output.npz,
    output:
        index="data/retain.faiss",
        npz="data/knn.npz",
        png="data/knn.png",
    params:
        tracked=tracked("knn"),
    log:
        "logs/knn.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline.knn --params " + PARAMS + " --data {input.data} --forget {input.forget} "
        "--index {output.index} --out {output.npz} --png {output.png} --log {log}"
