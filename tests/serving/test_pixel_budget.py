"""Decode threads outnumber the cores; the pixel budget bounds what they hold at once."""

import io
import threading
import time

import numpy as np
from PIL import Image

from creative_qa.media import _draft_size, decode_pixels
from serving.engine import PixelBudget


def _encoded(w: int, h: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG signature and IHDR claiming ``w`` x ``h``, with no pixel data (a tiny hostile upload)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_decode_pixels_reads_the_header_and_knows_jpeg_dct_scaling():
    assert decode_pixels(_encoded(640, 480, "PNG")) == 640 * 480
    big = _encoded(4096, 2048, "JPEG")
    assert decode_pixels(big) == 4096 * 2048  # no reduction asked
    assert decode_pixels(big, min_side=512) == 1024 * 512  # 1/4 keeps the short side >= 512
    assert decode_pixels(big, min_side=100) == 512 * 256  # 1/8 is the most DCT scaling gives
    odd = _encoded(2999, 2000, "JPEG")
    for data in (big, odd):
        for side in (100, 300, 500, 700, 1500):  # the estimate is what PIL's draft decoding really holds
            img = Image.open(io.BytesIO(data))
            if min(img.size) // side >= 2:  # decoding only asks for a draft when it can at least halve
                img.draft("RGB", _draft_size(img, side))
            assert decode_pixels(data, min_side=side) == img.size[0] * img.size[1], (img.size, side)
    huge = _png_header_only(10_000, 10_000)  # decoding refuses it before allocating: nothing to hold
    assert decode_pixels(huge) == 0
    gif = io.BytesIO()
    frames = [Image.new("RGB", (400, 300), (i, 0, 0)) for i in range(0, 250, 10)]
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    assert decode_pixels(gif.getvalue(), max_frames=8) == 9 * 400 * 300  # the canvas + 8 kept frames
    assert decode_pixels(b"not an image at all") == 0
    assert decode_pixels(b"") == 0


def test_the_budget_bounds_pixels_in_flight_and_lets_a_giant_run_alone():
    budget = PixelBudget(100)
    in_flight, peak, lock = [0], [0], threading.Lock()

    def job(pixels: int) -> None:
        with budget.reserve(pixels):
            with lock:
                in_flight[0] += min(pixels, 100)
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(0.02)
            with lock:
                in_flight[0] -= min(pixels, 100)

    threads = [threading.Thread(target=job, args=(p,)) for p in (40, 40, 40, 40, 500, 10, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert peak[0] <= 100  # never more than the budget at once, the giant (500 -> 100) included
    assert peak[0] >= 80  # and small ones do run side by side
    assert budget.used == 0


def test_a_large_waiting_creative_is_not_overtaken_for_ever():
    """First come, first served: small reservations arriving after a large one wait behind it."""
    budget = PixelBudget(100)
    stop, order = threading.Event(), []

    def small() -> None:
        while not stop.is_set():
            with budget.reserve(30):
                time.sleep(0.005)

    def large() -> None:
        with budget.reserve(100):
            order.append("large")

    smalls = [threading.Thread(target=small) for _ in range(6)]
    for t in smalls:
        t.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    big = threading.Thread(target=large)
    big.start()
    big.join(timeout=2)
    waited = time.monotonic() - t0
    stop.set()
    for t in smalls:
        t.join(timeout=5)
    assert order == ["large"] and waited < 1.0, waited
