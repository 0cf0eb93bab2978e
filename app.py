"""Gradio Space: is this image real or AI-generated? (minimal placeholder; the full app replaces it)"""
import argparse
import os
import tempfile

import gradio as gr
from transformers import pipeline

from modeling import build_detector, load_detector, save_detector


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=os.environ.get("MODEL_ID"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)))
    args = parser.parse_args()
    warning = ""
    if args.model:
        model = load_detector(args.model)
    else:
        warning = "WARNING: no trained model yet: this demo runs a randomly initialised network; its answers mean nothing."
        model = build_detector("convnextv2_atto", pretrained=False, image_size=256)
    folder = tempfile.mkdtemp()  # pipeline() takes its image processor from a folder's config.json
    save_detector(model, folder)
    clf = pipeline("image-classification", model=folder)

    def predict(image):
        return {o["label"]: o["score"] for o in clf(image)}

    with gr.Blocks(title="AI image detector") as demo:
        gr.Markdown("# Real or AI-generated?\n" + (f"**{warning}**" if warning else ""))
        inp = gr.Image(type="pil")
        out = gr.Label()
        inp.change(predict, inp, out)
    demo.launch(server_name="0.0.0.0", server_port=args.port)


if __name__ == "__main__":
    main()
