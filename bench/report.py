"""Render bench/results/*.json as the Markdown that BENCHMARKS.md records: per benchmark,
the machine, the command, and median / range / ratio to the baseline.

    .venv/bin/python bench/report.py [bench/results] > /tmp/results.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

STAGES = ("pull", "validate", "preprocess")
ORDER = [
    "data_loading",
    "validator",
    "snapshot_pull",
    "train_step",
    "scoring",
    "scoring_job",
    "scoring_cache",
    "orchestration",
    "scale",
    "nightly_reuse",
    "feature_nights",
    "gpu_train",
    "gpu_input",
]


def render(data: dict[str, Any]) -> str:
    m = data.get("machine", {})
    lines = [
        f"### {data['bench']}",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch {m.get('torch', '?')}"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + f"; {data.get('finished', '')}. Command: `{data.get('command', '')}`.",
        "",
        f"| case | median ({data['unit']}) | min | max | spread | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in data["results"]:
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-"
        lines.append(
            f"| {r['name']} | {r['median']:.1f} | {r['low']:.1f} | {r['high']:.1f} | "
            f"{r['spread_pct']:.0f}% | {ratio} |"
        )
    lines.append("")
    return "\n".join(lines)


def render_scale(data: dict[str, Any]) -> str:
    """bench/scale.py's table: seconds, images/s and peak memory per size and stage."""
    m = data.get("machine", {})
    lines = [
        "### scale",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores; {data.get('finished', '')}."
        f" Command: `{data.get('command', '')}`.",
        "",
        "| images | stage | seconds | images/s | peak RSS (MB) |",
        "|---:|---|---:|---:|---:|",
    ]
    for s in data["stages"]:
        lines.append(
            f"| {s['size']:,} | {s['stage']} | {s['seconds']:.1f} | {s['images_per_s']:.0f} | "
            f"{s['peak_rss_mb']:.0f} |"
        )
    lines += ["", f"Summary: `{json.dumps(data.get('summary', {}))}`", ""]
    return "\n".join(lines)


def render_stages(data: dict[str, Any]) -> str:
    """bench/nightly_reuse.py's seconds per stage (median of the repetitions) per case,
    and the training host's download of the set built (not in the stages' sum)."""
    downloads = data.get("training_download", {})
    extra = " training's download (s) |" if downloads else ""
    head = "| case | " + " | ".join(f"{stage} (s)" for stage in STAGES) + " | reused |"
    lines = [head + extra, "|---|" + "---:|" * (len(STAGES) + 1) + ("---:|" if extra else "")]
    for case, stages in data["stages"].items():
        medians = [sorted(stages[s])[len(stages[s]) // 2] for s in STAGES]
        reused = data.get("reused", {}).get(case, [{}])[0]
        said = ", ".join(f"{n:,} {what}" for what, n in reused.items()) or "-"
        row = f"| {case} | " + " | ".join(f"{m:.1f}" for m in medians) + f" | {said} |"
        if extra:
            times = sorted(downloads.get(case) or [float("nan")])
            row += f" {times[len(times) // 2]:.1f} |"
        lines.append(row)
    return "\n".join([*lines, ""])


NIGHT_COLUMNS = ("night", "images", "seconds", "shards", "small", "read_in_place", "sets_read")


def render_nights(data: dict[str, Any]) -> str:
    """bench/feature_nights.py's nights: each one's seconds and what its set holds."""
    lines = [
        "| " + " | ".join(c.replace("_", " ") for c in NIGHT_COLUMNS) + " |",
        "|" + "---:|" * len(NIGHT_COLUMNS),
    ]
    for night in data["nights"]:
        cells = [
            f"{night[c]:,}" if isinstance(night[c], int) else f"{night[c]:.2f}"
            for c in NIGHT_COLUMNS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""])


def render_cpu(data: dict[str, Any]) -> str:
    """bench/scoring_job.py's CPU per image by place, and the ceiling it sets."""
    split, bound = data["cpu_ms_per_image"], data["cpu_bound"]
    wanted = ("this_process", "decode_workers", "s3_server", "total", "other")
    places = [p for p in wanted if all(p in row for row in split.values())]
    head = " | ".join(p.replace("_", " ") for p in places)
    lines = [f"| CPU ms per image | {head} | images/s |", "|---|" + "---:|" * (len(places) + 1)]
    for case, row in split.items():
        cells = " | ".join(f"{row[p]:.2f}" for p in places)
        lines.append(f"| {case.replace('_', ' ')} | {cells} | {row['images_per_s']:.1f} |")
    machine = bound.get("machine_busy_pct")
    lines += [
        "",
        f"Every one of {bound['cores']} cores busy, the job would reach"
        f" {bound['ceiling_images_per_s']:.1f} images/s, {bound['ceiling_pct_of_runtime_alone']}%"
        f" of the runtime alone; it ran at {bound['job_pct_of_runtime_alone']}%, the cores"
        f" {bound['cores_busy_pct']}% busy with its work"
        + (f" ({machine}% with every process's)." if machine is not None else "."),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results"
    found = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    for name in [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER)):
        data = found[name]
        if data.get("bench") == "scale":
            print(render_scale(data))
        elif "results" in data and isinstance(data["results"], list) and "bench" in data:
            print(render(data))
            if "stages" in data:
                print(render_stages(data))
            if "nights" in data:
                print(render_nights(data))
            if "cpu_bound" in data:
                print(render_cpu(data))
        else:
            print(f"### {name}\n\n(not in the harness format: see bench/results/{name}.json)\n")


if __name__ == "__main__":
    main()
