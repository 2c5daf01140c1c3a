"""A training process killed with SIGKILL mid-run resumes from its newest checkpoint in S3
and ends at the same global step as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from train_helpers import CPU_QUICK, TINY, cli_command, run_cli, wait_for

from rxvision.home import repo_root
from rxvision.stack.local_stack import LocalStack
from rxvision.storage.s3 import S3Store
from rxvision.train.checkpoints import STEP_PATTERN
from rxvision.train.config import load_train_config
from rxvision.train.run import train

pytestmark = pytest.mark.integration

BUCKET = "s3://rxvision-checkpoints"
# a dozen or so training images (the content split decides) in batches of 4: 3-4 steps
# per epoch, 6 epochs
OVERRIDES = [
    *TINY,
    "training.epochs=6",
    "checkpoint.every_n_steps=3",
    f"checkpoint.root={BUCKET}",
    "checkpoint.keep_last=2",
]


def step_checkpoints(run_id: str) -> list[int]:
    keys = S3Store().list_keys(f"{BUCKET}/{run_id}/")
    names = (key.rsplit("/", 1)[-1] for key in keys)
    return sorted(int(m.group(1)) for m in map(STEP_PATTERN.match, names) if m)


def test_sigkill_mid_epoch_then_resume_reaches_the_same_step(
    stack: LocalStack,
    stack_env: dict[str, str],
    cli_env: dict[str, str],
    tiny_pills: Path,
    tmp_path: Path,
) -> None:
    run_id = "it-killed"
    summary = tmp_path / "summary.json"
    # the CLI validates an image folder as the nightly does; these photos are 48 px
    data_config = tmp_path / "data.yaml"
    policy = (repo_root() / "configs" / "data.yaml").read_text()
    data_config.write_text(
        policy.replace("min_width: 224", "min_width: 32").replace(
            "min_height: 224", "min_height: 32"
        )
    )
    args = [
        "--config",
        str(CPU_QUICK),
        "--data-config",
        str(data_config),
        "--data",
        str(tiny_pills),
        *OVERRIDES,
        "--run-id",
        run_id,
        "--summary",
        str(summary),
    ]
    env = {**cli_env, **stack_env}
    first = subprocess.Popen(
        cli_command(*args),
        env=env,
        cwd=repo_root(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for(lambda: bool(step_checkpoints(run_id)), timeout=240, what="a step checkpoint")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # no clean-up of any kind: a lost machine
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    killed_at = step_checkpoints(run_id)[-1]
    assert not summary.exists()

    run_cli(args, env)
    resumed = json.loads(summary.read_text())
    assert 0 < killed_at < resumed["max_steps"], f"not killed mid-run (step {killed_at})"
    assert resumed["resumed_from"] is not None
    resumed_step = int(STEP_PATTERN.match(resumed["resumed_from"].rsplit("/", 1)[-1]).group(1))
    assert resumed_step >= killed_at
    assert resumed["global_step"] == resumed["max_steps"] == 6 * resumed["extra"]["steps_per_epoch"]

    # the same run id on other data: refused before anything is logged or trained
    other = tmp_path / "other-pills"
    shutil.copytree(tiny_pills, other)
    refused = subprocess.run(
        cli_command(*[str(other) if a == str(tiny_pills) else a for a in args]),
        env=env,
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 13, refused.stderr
    assert f"run {run_id}" in refused.stderr and "refusing to resume" in refused.stderr

    # the same config, never interrupted (in-process: only the step count is compared)
    clean = train(
        load_train_config(CPU_QUICK, OVERRIDES),
        tiny_pills,
        run_id="it-uninterrupted",
        progress_bar=False,
    )
    assert clean.resumed_from is None
    assert clean.global_step == resumed["global_step"]

    # one MLflow run for the killed-and-resumed run, finished
    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs(
        [client.get_experiment_by_name("rxvision_cpu_quick").experiment_id],
        filter_string=f"tags.`rxvision.run_id` = '{run_id}'",
    )
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].info.run_id == resumed["mlflow_run_id"]
