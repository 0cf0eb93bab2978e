"""Streaming sources under several processes: each rank reads its own share of every epoch, together all of it."""
import json
from collections import Counter
from pathlib import Path

import datasets
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import make_image

from train.data import SourceSpec, build_training_data
from train.transforms import build_train_transform


def write_parquet_shards(folder: Path, n_images: int, n_shards: int) -> Path:
    """A local Hub-style dataset of n_shards parquet files (streamed shard by shard, like a Hub set)."""
    paths = [make_image(folder / "img" / f"{folder.name}_{i}.png", i, size=(20, 16), fmt="PNG", fake=i % 2 == 1)
             for i in range(n_images)]
    ds = datasets.Dataset.from_dict({"image": [str(p) for p in paths], "label": [i % 2 for i in range(n_images)]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.ClassLabel(names=["real", "fake"])}))
    data = folder / "data"
    data.mkdir()
    for k in range(n_shards):
        ds.shard(n_shards, k, contiguous=True).to_parquet(str(data / f"train-{k:05d}.parquet"))
    return data


def _read_epochs(rank: int, world_size: int, init_file: str, specs: list[dict], out: str, epochs: int) -> None:
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0  # a pyarrow workaround that sleeps 5 s: not for tests
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    transform = build_train_transform("light", 16, (0.5,) * 3, (0.5,) * 3, "bilinear")
    dataset, _, _ = build_training_data([SourceSpec.parse(s) for s in specs], lambda profile: transform, seed=3,
                                        rank=rank, world_size=world_size)
    seen = []
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        # the rows the samples are made from, named by their file (the samples carry pixels only)
        seen.append([Path(record["image"]["path"]).name for record in dataset.rows])
        assert len(list(dataset)) == len(seen[-1])  # every row of the share becomes a sample
    gathered = [None] * world_size
    dist.all_gather_object(gathered, seen)
    if rank == 0:
        Path(out).write_text(json.dumps(gathered))
    dist.destroy_process_group()


# Each case spawns two interpreters (about 20 s here): the two-source mix runs by default, the others with -m slow
@pytest.mark.parametrize("shards", [pytest.param((4,), marks=pytest.mark.slow, id="shards-split"),
                                    pytest.param((3,), marks=pytest.mark.slow, id="examples-split"),
                                    pytest.param((4, 2), id="two-sources")])
def test_two_ranks_read_disjoint_shares_that_cover_every_image_each_epoch(tmp_path, shards):
    sizes = [10 + 3 * i for i in range(len(shards))]
    specs = [{"hub": str(write_parquet_shards(tmp_path / f"set{i}", n, k)), "streaming": True}
             for i, (n, k) in enumerate(zip(sizes, shards))]
    out = tmp_path / "seen.json"
    mp.spawn(_read_epochs, args=(2, str(tmp_path / "init"), specs, str(out), 2), nprocs=2, join=True)
    by_rank = json.loads(out.read_text())  # [rank][epoch] -> file names
    everything = Counter(f"set{i}_{j}.png" for i, n in enumerate(sizes) for j in range(n))
    for epoch in range(2):
        shares = [Counter(by_rank[rank][epoch]) for rank in range(2)]
        assert all(shares), "a rank read nothing"
        assert not set(shares[0]) & set(shares[1]), "an image was read by both ranks"
        assert shares[0] + shares[1] == everything, "an image was skipped or read twice in an epoch"
    assert by_rank[0][0] != by_rank[0][1], "the order should change with the epoch"


def test_one_process_reads_the_whole_stream(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    spec = SourceSpec.parse({"hub": str(write_parquet_shards(tmp_path / "set0", 6, 2)), "streaming": True})
    transform = build_train_transform("light", 16, (0.5,) * 3, (0.5,) * 3, "bilinear")
    dataset, _, summary = build_training_data([spec], lambda profile: transform)
    assert not dataset.split_by_rank and summary["streaming"]["world_size"] == 1
    assert torch.stack([s["pixel_values"] for s in dataset]).shape == (6, 3, 16, 16)


@pytest.mark.slow  # ~45 s: two torchrun processes through train/run.py
def test_torchrun_streaming_run_gives_each_rank_its_own_share(tmp_path):
    """Through train/run.py and the Trainer: the loader must not hand rank 0's reading to both, nor cut a share again."""
    import os
    import subprocess
    import sys
    import textwrap

    from conftest import ROOT, TINY_ARCH

    data = write_parquet_shards(tmp_path / "set0", 12, 4)
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(f"""
        import os, sys
        import datasets
        import train.data.samples as samples
        from train.run import main
        datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0
        decode = samples.decode_image
        def recording(value, *args):
            with open(os.path.join({str(tmp_path)!r}, "read" + os.environ["RANK"]), "a") as f:
                f.write(os.path.basename(value["path"]) + "\\n")
            return decode(value, *args)
        samples.decode_image = recording
        main(sys.argv[1:])
    """))
    config = tmp_path / "stream.yaml"
    config.write_text(f"train_sources:\n  - {{hub: {str(data)!r}, streaming: true}}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(worker),
           str(config), "--model_name_or_path", TINY_ARCH, "--pretrained", "false", "--image_size", "32",
           "--output_dir", str(tmp_path / "out"), "--max_steps", "3", "--per_device_train_batch_size", "2",
           "--ddp_backend", "gloo", "--dataloader_num_workers", "0", "--report_to", "none", "--use_cpu"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    reads = [(tmp_path / f"read{r}").read_text().split() for r in (0, 1)]
    # 3 steps of 2 images per rank = one pass over a share of 6: together the 12 images, each once
    assert sorted(reads[0] + reads[1]) == sorted(f"set0_{i}.png" for i in range(12))
