"""The batch tab's table, its CSV download and its thumbnails' captions, from /predict_batch's results."""
from __future__ import annotations

import csv
import time
import uuid
from pathlib import Path

BATCH_COLUMNS = ["file", "label", "fake_probability", "verdict_holds", "metadata_says", "camera", "error"]
CSV_MAX_AGE_S = 3600  # Gradio serves a copy from its own cache; ours are only needed briefly


def table_row(result: dict) -> list:
    if "error" in result:
        return [result["file"], "error", None, None, "", "", result["error"]]
    prov = result["provenance"]
    camera = " ".join(v for v in (prov["camera_make"], prov["camera_model"]) if v)
    return [result["file"], result["label"], round(result["fake_probability"], 4),
            result["stability"]["verdict_holds"], prov["declared_generator"] or "", camera, ""]


def caption(result: dict) -> str:
    """The verdict and score first, the file name after: what matters stays readable however narrow the tile."""
    return f"{result['label']} {result['fake_probability']:.0%} · {result['file']}"


def write_csv(rows: list[list], csv_dir: Path) -> str:
    csv_dir.mkdir(parents=True, exist_ok=True)
    for old in csv_dir.glob("*.csv"):
        if time.time() - old.stat().st_mtime > CSV_MAX_AGE_S:
            old.unlink(missing_ok=True)
    path = csv_dir / f"detections-{uuid.uuid4().hex[:8]}.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(BATCH_COLUMNS)
        writer.writerows(rows)
    return str(path)
