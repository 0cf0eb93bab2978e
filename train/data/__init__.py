"""Training and evaluation data: image folders and Hub datasets as one `datasets.Dataset` schema. One seam a
module: folders.py, layouts.py (downloaded sets in their own layouts, through a label_map), sources.py (SourceSpec,
Hub datasets), samples.py (decoding, placeholders, the batch), sampling.py (the epoch order), build.py (what the
Trainer takes; a streamed mix split between ranks).

Every source, whatever its origin, becomes a dataset with the columns
    image (datasets.Image), label (int, real=0 / fake=1), source (str), generator (str; "none" for reals)
so sources concatenate, and metrics can be grouped by source or generator.

Then, for the Trainer:
- `ImageSamples` turns rows into model inputs with each source's augmentation profile. An image that cannot be
  decoded becomes a placeholder with label -100 (the loss ignores it, batches keep their shape, so distributed
  ranks stay in step) and is counted; one bad file among 400k never stops a run.
- `EpochSampler` fixes each epoch's rows: every new row plus, in the continual phase, a replay draw from the
  old sources, stratified (equal per old source, topped up from the others when one runs short) and re-drawn
  every epoch from a generator seeded by (seed, epoch). It also hands every sample its own augmentation seed,
  so a resumed run, or one with another number of workers, sees exactly the same pixels.
"""
from train.data.build import EvalData, build_eval_data, build_training_data
from train.data.folders import FEATURES, load_image_folder
from train.data.samples import IGNORE_INDEX, DataLimits, ImageSamples, StreamingImageSamples, collate, decode_image
from train.data.sampling import EpochSampler, source_balance_weights, stratified_quota
from train.data.sources import SourceSpec, describe, load_hub_source, load_source

__all__ = ["FEATURES", "IGNORE_INDEX", "DataLimits", "EpochSampler", "EvalData", "ImageSamples", "SourceSpec",
           "StreamingImageSamples", "build_eval_data", "build_training_data", "collate", "decode_image", "describe",
           "load_hub_source", "load_image_folder", "load_source", "source_balance_weights", "stratified_quota"]
