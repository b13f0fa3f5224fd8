"""benchmarks/gpu_check.py --dry: the GPU check's code run on the CPU with tiny models (seconds).

The table it writes has every section and row, numbers where figures belong, and its logic
checks pass: the fp32 sampler gives DDPMPipeline's images, faiss finds numpy's exact neighbours."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["naive", "neggrad", "erasediff", "siss", "siss_no_is", "retrack"]
DRY_FAST = "bf16 + channels_last"  # the fast variant with torch.compile off, as --dry runs it


def sections(text: str) -> dict[str, list[dict[str, str]]]:
    """Each '## ' section's table as a list of rows, each row a dict column -> cell."""
    out = {}
    for block in text.split("\n## ")[1:]:
        title, *lines = block.strip().splitlines()
        table = [[cell.strip() for cell in line.strip("| ").split("|")] for line in lines if line.startswith("|")]
        columns, rows = table[0], table[2:]  # table[1]: the --- line
        out[title] = [dict(zip(columns, row, strict=True)) for row in rows]
    return out


def number(cell: str) -> float:
    return float(cell)  # raises on a failed or missing figure


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("gpu_check") / "table.md"
    run = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    return text, sections(text)


def test_header_names_the_device_the_versions_and_the_dry_run(table):
    first = table[0].splitlines()[0]
    assert "device cpu" in first and "torch " in first and "diffusers " in first and "dry run: yes" in first
    assert first.endswith("complete")


def test_sampler_section_has_every_row_and_the_fp32_sampler_gives_the_pipeline_images(table):
    rows = table[1]["1. Sampler against DDPMPipeline"]
    assert [(r["model"], r["sampler"]) for r in rows] == [
        (model, sampler) for model in ("cifar10-32", "celebahq-256")
        for sampler in ("DDPMPipeline", "sampler, fp32", f"sampler, {DRY_FAST}")]
    for row in rows:
        assert number(row["images/s"]) > 0 and number(row["ratio to DDPMPipeline"]) > 0
    fp32 = [r for r in rows if r["sampler"] == "sampler, fp32"]
    assert all(number(r["max abs difference to DDPMPipeline (fp32)"]) <= 1e-5 for r in fp32)
    assert all(r["target >= 3x met"] in ("yes", "no") for r in rows if r["sampler"].endswith(DRY_FAST))


def test_training_section_has_every_method_in_both_computes_and_the_sd_step(table):
    rows = table[1]["2. One training step"]
    assert [(r["method"], r["compute"]) for r in rows[:-1]] == [
        (method, compute) for method in METHODS for compute in ("fp32 eager", DRY_FAST)]
    assert rows[-1]["model"] == "sd-v1.4" and rows[-1]["compute"] == "bf16 autocast + gradient checkpointing"
    for row in rows:
        assert number(row["s/step"]) > 0 and row["peak GPU memory (GiB)"] == "n/a (cpu)"


def test_search_section_times_faiss_and_finds_the_exact_neighbours(table):
    rows = {r["search"]: r for r in table[1]["3. Exact neighbour search, K = 10"]}
    assert list(rows) == ["faiss IndexFlatL2, CPU", "faiss IndexFlatL2, GPU", "numpy exact, float64"]
    assert number(rows["faiss IndexFlatL2, CPU"]["seconds"]) > 0
    gpu = rows["faiss IndexFlatL2, GPU"]
    assert gpu["seconds"] == "faiss-gpu not installed" or (  # faiss-cpu, as pinned; a faiss GPU build:
        number(gpu["seconds"]) > 0 and gpu["same neighbours as faiss CPU"].startswith("yes"))
    assert number(rows["numpy exact, float64"]["seconds"]) > 0
    assert rows["numpy exact, float64"]["same neighbours as faiss CPU"] == "yes"


def test_the_script_imports_nothing_from_tests_and_the_entry_is_valid_bash():
    lines = (ROOT / "benchmarks" / "gpu_check.py").read_text().splitlines()
    assert not any(line.lstrip().startswith(("from tests", "import tests", "from conftest")) for line in lines)
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")]).returncode == 0
