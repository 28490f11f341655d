"""The sample workload of ``hive up --demo``: a small DAG with progress, like the seed's
data_clean -> model_train -> evaluate pipeline, plus a shell step."""

from __future__ import annotations

from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn

from events.base import new_id
from events.task import TaskSpec
from hive import render
from hive.client import TERMINAL, HiveClient


async def run_demo(url: str, data: Path) -> None:
    run = new_id()[-6:]
    clean, train, evaluate, report = (f"demo-{run}-{n}" for n in ("clean", "train", "evaluate", "report"))
    items = [
        (clean, TaskSpec(executor="function", type="data_clean", payload={"rows": 5000}, name="clean data")),
        (train, TaskSpec(executor="function", type="model_train", payload={"epochs": 5}, after=[clean], name="train")),
        (evaluate, TaskSpec(executor="function", type="evaluate", after=[train], name="evaluate")),
        (
            report,
            TaskSpec(
                executor="process",
                command=["sh", "-c", "echo hive:progress 1 report written; echo done"],
                after=[evaluate],
                name="report",
            ),
        ),
    ]
    async with await HiveClient.connect(url, data) as hive:
        await hive.submit_many(items)
        render.out.print(f"demo: submitted {len(items)} dependent tasks ({clean} -> {train} -> {evaluate} -> {report})")
        with Progress(
            TextColumn("{task.description:<40}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[state]:<10}"),
            console=render.out,
        ) as bar:
            rows = {tid: bar.add_task(spec.name or tid, total=1.0, state="pending") for tid, spec in items}
            for tid, _ in items:

                def progress(fraction: float, message: str, tid: str = tid) -> None:
                    bar.update(rows[tid], completed=fraction, state="running", description=render.clean(message[:40]))

                final = await hive.wait(tid, progress, timeout=120)
                bar.update(rows[tid], completed=1.0 if final["state"] == "completed" else 0.0, state=final["state"])
                if final["state"] in TERMINAL and final["state"] != "completed":
                    break
