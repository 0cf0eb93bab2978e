"""Fuzzing the app's file readers (modeling.imageio.read_image and modeling.provenance.read_provenance) with
hypothesis: random bytes and mutated real images of every supported format.

Property: each input is either decoded into an RGB image or refused with ImageReadError; never another
exception. How long the slowest case takes (the requirement: under one second) is a benchmark, not a test, since a
timed assertion would be flaky on a shared machine: `python benchmarks/imageio_worst_case.py`.

The default run covers 10,000 cases (derandomized, so CI is reproducible); `pytest -m slow` runs 50,000 more
with fresh randomness.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import encode_image, odd_image_cases
from modeling.imageio import ImageReadError, read_image
from modeling.provenance import read_provenance

# Hostile files make Pillow warn (bomb-sized headers, corrupt EXIF); read_image refuses or handles them.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning", "ignore::UserWarning")

N_RANDOM, N_MUTATED = 3_000, 7_000  # 10,000 cases in the default run
N_SLOW = 25_000  # per strategy in the slow run


def seed_files() -> list[bytes]:
    """Small valid files of every format and mode read_image accepts (mutations start from these)."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    seeds = [encode_image(photo, fmt) for fmt in ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")]
    seeds += [encode_image(photo, "JPEG", progressive=True), encode_image(photo, "AVIF", quality=50),
              encode_image(photo, "TIFF", compression="tiff_lzw"), encode_image(photo.convert("RGBA"), "WEBP")]
    seeds += [data for name, data, error in odd_image_cases().values() if error is None]
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Canon"
    seeds.append(encode_image(photo, "JPEG", exif=exif))
    return seeds


SEEDS = seed_files()


class CaseStats:
    """Counts cases, decoded and refused, for the report printed after each test."""

    def __init__(self):
        self.n, self.decoded, self.refused = 0, 0, 0

    def run(self, data: bytes):
        try:
            img = read_image(data)
            assert img.mode == "RGB" and img.width > 0 and img.height > 0
            self.decoded += 1
        except ImageReadError as e:
            assert str(e)  # a message for the person
            self.refused += 1
        read_provenance(data)  # must not raise either
        self.n += 1


@pytest.fixture
def report(request):
    stats = CaseStats()
    yield stats
    line = (f"{request.node.name}: {stats.n} cases ({stats.decoded} decoded, {stats.refused} refused, "
            "0 other exceptions)")
    request.node.user_properties.append(("fuzz", line))  # in --junitxml reports
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print("\n" + line)  # in the test output, captured or not


@st.composite
def mutated(draw):
    """A seed file with a few byte flips, an insertion or deletion, and maybe a truncation or a duplicated run."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    op = draw(st.sampled_from(["none", "truncate", "insert", "delete", "duplicate"]))
    at = draw(st.integers(0, len(data)))
    if op == "truncate":
        data = data[:at]
    elif op == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
    elif op == "delete":
        del data[at:at + draw(st.integers(1, 64))]
    elif op == "duplicate":
        data[at:at] = data[at:at + draw(st.integers(1, 256))] * draw(st.integers(1, 8))
    return bytes(data)


def random_bytes():
    # Plain noise, and noise behind a real magic number so the decoders get past their first check.
    magic = st.sampled_from([b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
                             b"BM", b"II*\x00", b"MM\x00*", b"\x00\x00\x00\x1cftypavif"])
    return st.tuples(magic, st.binary(max_size=2048)).map(lambda t: t[0] + t[1])


FAST = settings(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
SLOW = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))


def test_seeds_are_valid():
    assert len(SEEDS) >= 15
    for data in SEEDS:
        assert read_image(data).mode == "RGB"


def test_fuzz_random_bytes(report):
    @settings(FAST, max_examples=N_RANDOM)
    @given(random_bytes())
    def check(data):
        report.run(data)

    check()
    assert report.n >= N_RANDOM


def test_fuzz_mutated_images(report):
    @settings(FAST, max_examples=N_MUTATED)
    @given(mutated())
    def check(data):
        report.run(data)

    check()
    assert report.n >= N_MUTATED


@pytest.mark.slow
def test_fuzz_long(report):
    @settings(SLOW, max_examples=N_SLOW)
    @given(st.one_of(mutated(), random_bytes()))
    def check(data):
        report.run(data)

    check()
    assert report.n >= N_SLOW
