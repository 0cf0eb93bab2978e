"""The whole page: title, what is served, the two tabs, the documented API, and the queue."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from modeling.inference import Detector

from .api import add_api
from .batch_tab import batch_tab
from .headline import model_headline
from .loading import SPACE_DIR
from .single_tab import single_image_tab

QUEUE_SIZE = 32  # requests waiting beyond this are refused ("queue full") instead of piling up in memory
# Passed to launch() (Gradio 6 takes css there). Captions wrap instead of ending in "...": a thumbnail's verdict
# and score must stay readable.
CSS = """
#batch-thumbnails .caption-label, #examples .caption-label {
    white-space: normal; overflow: visible; text-overflow: clip; max-width: 100%; opacity: 1;
}
"""


def build_demo(detector: Detector, warning: str | None = None, examples_dir: Path = SPACE_DIR / "examples",
               feedback_dir: str | Path | None = None) -> gr.Blocks:
    """The UI, without launching it (tests and the Space packager build it this way)."""
    # Every event that runs the model shares one concurrency slot: the model already uses all CPU cores.
    model_slot = dict(concurrency_id="model", concurrency_limit=1)
    with gr.Blocks(title="Real or AI-generated?", delete_cache=(1800, 3600)) as demo:
        gr.Markdown("# Real or AI-generated?\nUpload, paste or drag an image; the detector estimates whether an "
                    "AI model generated it.")
        gr.Markdown(model_headline(detector), elem_id="model-info")
        if warning:
            gr.Markdown(f"⚠️ **{warning}**", elem_id="model-warning")
        single_image_tab(detector, examples_dir, Path(feedback_dir) if feedback_dir else None, model_slot)
        batch_tab(detector, model_slot)
        add_api(demo, detector)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return demo
