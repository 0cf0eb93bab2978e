"""The batch tab: many files at once; thumbnails and a table, most likely AI-generated first (unreadable files
last, with the reason), and the same table as CSV. Each file is read and decoded once (space/uploads.py): the
thumbnail is the decoded image, shrunk."""
from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from modeling.inference import Detector

from .api import predict_files
from .batch_export import BATCH_COLUMNS, caption, table_row, write_csv
from .verdict_text import slider_value, threshold_from_slider

THUMBNAIL_SIDE = 160


def analyse_batch(detector: Detector, paths: list[str] | None, slider: float, csv_dir: Path):
    """thumbnails, table rows, CSV path, and a notice (a refusal's reason, kept on the page)."""
    try:
        results, uploads = predict_files(detector, paths, threshold_from_slider(detector, slider))
    except gr.Error as e:  # no files or too many: say so where the results would be
        return [], [], None, f"**Not analysed:** {e.message}"
    order = sorted(range(len(results)), key=lambda i: -results[i].get("fake_probability", -1.0))
    rows = [table_row(results[i]) for i in order]
    thumbnails = []
    for i in order:
        if uploads[i] is not None:
            thumb = uploads[i].image.copy()
            thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            thumbnails.append((thumb, caption(results[i])))
    refused = sum(u is None for u in uploads)
    notice = f"{len(results) - refused} analysed" + (f", {refused} refused (reason in the table)" if refused else "")
    return thumbnails, rows, write_csv(rows, csv_dir), notice


def batch_tab(detector: Detector, model_slot: dict) -> None:
    csv_dir = Path(tempfile.mkdtemp(prefix="detector-csv-"))
    with gr.Tab("Batch"):
        files_in = gr.File(label="Images", file_count="multiple", type="filepath")
        threshold = gr.Slider(0.01, 0.99, value=slider_value(detector), step=0.001, label="Threshold")
        run = gr.Button("Analyse all", variant="primary")
        notice = gr.Markdown(elem_id="batch-notice")
        thumbs_out = gr.Gallery(label="Thumbnails, most likely AI-generated first", columns=6, height="auto",
                                allow_preview=False, elem_id="batch-thumbnails")
        table_out = gr.Dataframe(headers=BATCH_COLUMNS, label="Results, most likely AI-generated first",
                                 interactive=False, wrap=True, elem_id="batch-table",
                                 column_widths=["16%", "8%", "10%", "9%", "17%", "12%", "28%"])
        csv_out = gr.File(label="Download CSV")
        run.click(lambda paths, t: analyse_batch(detector, paths, t, csv_dir), [files_in, threshold],
                  [thumbs_out, table_out, csv_out, notice], api_visibility="private", **model_slot)
