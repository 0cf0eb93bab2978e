"""Gradio Space: is this image a photograph or AI-generated? (The Hub's Gradio SDK runs this file.)

    python app.py [--model DIR_OR_HUB_ID] [--port N] [--host ADDRESS] [--feedback_dir DIR]

The model comes from --model, else $MODEL_ID, else the model the Space was pushed with (space_config.json), else
the bundled checkpoints/demo/, else a randomly initialised network (with a warning on the page). It is loaded
once; every request shares it. Its converted form is cached in --cache_dir (default: $MODEL_CACHE_DIR, else
model_cache/ beside this file), so a second start skips the conversion. The page is built by the space/ package;
the Space is this file, space/, modeling/, examples/ and the cache (hub/push.py).
"""
from __future__ import annotations

import argparse
import logging
import os

from modeling.imageio import MAX_BYTES
from modeling.inference import BACKENDS
from space.loading import default_cache_dir, limit_malloc_arenas, load_app_detector
from space.page import CSS, build_demo

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or Hub repo id (default: $MODEL_ID, then "
                                                      "space_config.json, then checkpoints/demo/, then a random "
                                                      "network)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)))
    parser.add_argument("--host", default=None, help="address to bind (default: $GRADIO_SERVER_NAME or 127.0.0.1;"
                                                     " 0.0.0.0 to serve the network)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--cache_dir", default=default_cache_dir(),
                        help="where the converted model is kept between starts ('' to convert at every start)")
    parser.add_argument("--feedback_dir", default=None,
                        help="enable 'This verdict is wrong': store reported images and labels here (imagefolder)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    limit_malloc_arenas()
    detector, warning = load_app_detector(args.model, backend=args.backend, cache_dir=args.cache_dir or None)
    logger.info("Serving %s with the %s backend; threshold %.3f, verdict band %.3f-%.3f", detector.name,
                detector.backend, detector.threshold, *detector.band())
    build_demo(detector, warning, feedback_dir=args.feedback_dir).launch(
        server_name=args.host, server_port=args.port, css=CSS,
        max_file_size=2 * MAX_BYTES,  # uploads between 20 and 40 MB get read_image's clearer message
        state_session_capacity=1000, show_error=True, ssr_mode=False)


if __name__ == "__main__":
    main()
