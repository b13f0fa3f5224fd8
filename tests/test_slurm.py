"""The workflow under SLURM (snakemake-executor-plugin-slurm), on a one-node cluster that
scripts/slurm-ci.sh starts on this machine: the tiny experiment runs to its report with every job
submitted through sbatch, and a job that fails in SLURM fails the run.

The module is skipped, with the script's reason, where that cluster cannot be had: not root, no
apt-get, apt-get failed, or a SLURM of the machine's own. The profile (written into each temporary
copy by `ci_profile`) fits the jobs to that node: it is not the one to use on a real cluster
(profiles/slurm)."""

import itertools
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_workflow import ENV, make_workdir

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]
SCRIPT = ROOT / "scripts/slurm-ci.sh"
SKIP_CODES = {3, 4, 5, 6}  # not root, no apt-get, apt-get failed, a SLURM of this machine's own
SETUP_TIMEOUT_S = 900  # apt-get included
RUN_TIMEOUT_S = 1800  # the tiny experiment with one method: about 18 jobs, two at a time
FAIL_TIMEOUT_S = 300  # two jobs
SUBMITTED = "has been submitted with SLURM jobid"


def ci_profile(workdir: Path) -> str:
    """Write the test's profile into ``workdir`` and return its path, relative to it. It is given
    as --workflow-profile, so it replaces profiles/default and inherits nothing. The test cluster
    has no accounting, so job states come from squeue (sacct would fail and the plugin would wait
    for ever; it still asks sacct for an account, harmlessly); fast polling for jobs of seconds;
    every rule fitted to the node: 1 CPU, 1 GB, 10 min and no GPU (the rules ask for full-scale
    resources, GPUs included)."""
    rules = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules"], cwd=workdir, env=ENV,
                           capture_output=True, text=True, check=True).stdout.split()
    profile = {
        "executor": "slurm",
        "jobs": 2,  # the node's 2 CPUs (one per job); more would only wait in the queue
        "cores": 1,  # the threads of a torch job (rules/common.smk), sbatch --cpus-per-task
        "latency-wait": 10,
        "printshellcmds": True,
        "show-failed-logs": True,
        "default-resources": {"mem_mb": 1000, "runtime": 10},
        "set-resources": {rule: {"mem_mb": 1000, "runtime": 10, "gpu": 0} for rule in rules},
        "slurm-status-command": "squeue",
        # The first status check 2 s after a submission, and again 2 s after a check that saw a
        # job end; the plugin adds 10 s to the wait after each check that saw none end (so
        # seconds-between-status-checks would change nothing).
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-keep-successful-logs": True,  # the evidence that each job ran in SLURM
    }
    path = workdir / "profiles/slurm-ci/config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return str(path.parent.relative_to(workdir))


def cancel_jobs(workdir: Path) -> None:
    """Cancel the SLURM jobs still queued or running in ``workdir`` (after a killed run)."""
    queue = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True).stdout
    ids = [line.split()[0] for line in queue.splitlines() if line.split()[1:] and
           Path(line.split()[1]).is_relative_to(workdir)]
    if ids:
        subprocess.run(["scancel", *ids])


def job_stats(output: str) -> Counter:
    """The jobs per rule of Snakemake's "Job stats" table (the first one: the plan)."""
    table = output[output.index("Job stats:"):]
    rows = [line.split() for line in table.splitlines()[3:]]
    return Counter({rule: int(n) for rule, n in itertools.takewhile(lambda r: r[0] != "total", rows)})


def snakemake_slurm(workdir: Path, *targets: str, timeout_s: int) -> tuple[subprocess.CompletedProcess, float]:
    """Snakemake through the test's SLURM profile, killed after ``timeout_s``: with the status
    command wrong, the plugin would wait for ever, and SIGTERM does not end it."""
    cmd = ["timeout", "-s", "KILL", str(timeout_s), sys.executable, "-m", "snakemake",
           "--workflow-profile", ci_profile(workdir), *targets]
    start = time.monotonic()
    try:
        result = subprocess.run(cmd, cwd=workdir, env=ENV, capture_output=True, text=True)
    finally:
        cancel_jobs(workdir)
    elapsed = time.monotonic() - start
    if result.returncode in (124, 137):
        raise AssertionError(f"snakemake was killed after {timeout_s} s:\n{result.stdout}\n{result.stderr}")
    return result, elapsed


@pytest.fixture(scope="module")
def slurm():
    """A one-node SLURM: started by scripts/slurm-ci.sh, and stopped after the module if it was
    this fixture that started it."""
    if shutil.which("bash") is None:
        pytest.skip("no bash to run scripts/slurm-ci.sh")
    started = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode != 0
    if started:
        try:
            result = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True,
                                    timeout=SETUP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True)
            pytest.fail(f"scripts/slurm-ci.sh start took more than {SETUP_TIMEOUT_S} s")
        reason = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        if result.returncode in SKIP_CODES:
            pytest.skip(reason)
        if result.returncode != 0:
            subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True)
            pytest.fail(f"scripts/slurm-ci.sh start failed ({result.returncode}): {reason}\n{result.stderr}")
    yield
    if started:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True)


def test_tiny_experiment_runs_through_slurm(slurm, tmp_path):
    w = make_workdir(tmp_path / "slurm")
    # The tiny experiment with one method and no sweep: every stage, half the jobs (each costs
    # seconds of SLURM and Snakemake start-up here); tests/test_workflow.py runs the whole of it.
    params = yaml.safe_load((w / "params.yaml").read_text())
    params["experiment"].update(methods=["retrack"], retrain=True)
    params["experiment"]["sweep"]["methods"] = []
    (w / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result, elapsed = snakemake_slurm(w, timeout_s=RUN_TIMEOUT_S)
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"snakemake under SLURM failed ({result.returncode}):\n{out}"
    assert (w / "report/table.md").read_text().strip()
    # Every job but `all` (nothing to run) went through sbatch: one SLURM log per submission.
    planned = job_stats(out)
    planned.pop("all", None)
    slurm_logs = w / ".snakemake/slurm_logs"  # rule_<rule>/[<wildcards>/]<SLURM job id>.log
    logs = sorted(slurm_logs.rglob("*.log"))
    ran = Counter(p.relative_to(slurm_logs).parts[0].removeprefix("rule_") for p in logs)
    assert out.count(SUBMITTED) == len(logs) == sum(planned.values()) >= 15, (planned, ran)
    assert ran == planned
    assert "Nothing to be done" in subprocess.run(
        [sys.executable, "-m", "snakemake", "--dry-run"], cwd=w, env=ENV, capture_output=True, text=True).stdout
    print(f"tiny experiment under SLURM: {len(logs)} jobs in {elapsed:.0f} s")


def test_failing_job_fails_the_run(slurm, tmp_path):
    w = make_workdir(tmp_path / "failing")
    params = yaml.safe_load((w / "params.yaml").read_text())
    # Valid params (a path is all they can check), but the pretrain job finds no model there.
    (w / "not-a-model").mkdir()
    params["model"].update(source="pretrained", pretrained="not-a-model")
    (w / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result, elapsed = snakemake_slurm(w, "models/pretrained", timeout_s=FAIL_TIMEOUT_S)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert SUBMITTED in out and "Error in rule pretrain" in out, out
    assert "failed, SLURM status is: 'FAILED'" in out, out
    log = next((w / ".snakemake/slurm_logs/rule_pretrain").glob("*.log")).read_text()
    assert "error: not-a-model: not a loadable diffusers DDPMPipeline" in log, log
    assert not (w / "models/pretrained").exists()
    print(f"failing run under SLURM: exit {result.returncode} after {elapsed:.0f} s")
