"""The HTTP service against real uvicorn servers on 127.0.0.1 and a tiny real checkpoint."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from pixelwise.bench.bench_serve import free_port, serving, tiny_checkpoint  # noqa: E402

from pixelwise.inference.predictor import Predictor  # noqa: E402
from pixelwise.serve import ServeSettings, create_app  # noqa: E402
from pixelwise.serve.batching import InferenceQueue, Overloaded  # noqa: E402
from pixelwise.tasks import Task  # noqa: E402

NAMES = ["a", "b", "c"]


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def rgb_image(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return Predictor.from_checkpoint(checkpoint, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def server(predictor):
    settings = ServeSettings(max_upload_bytes=256 * 1024, max_pixels=1_000_000)
    with serving(create_app(predictor, settings, name="tiny", input_size=64)) as url:
        yield url


class GatedPredictor:
    """The real predictor, but each batch waits for `gate`: makes queueing deterministic."""

    def __init__(self, inner: Predictor):
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, images):
        self.entered.set()
        assert self.gate.wait(30)
        return self.inner.predict(images)


def post(url: str, data: bytes, fmt: str = "png", name: str = "x.png", **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/predict", params={"format": fmt}, files={"file": (name, data, "image/png")},
                      timeout=60, **kwargs)


def test_health_model_docs_and_page(server):
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["max_queue"] == 32
    model = httpx.get(f"{server}/model").json()
    assert model["name"] == "tiny" and model["task"] == "multiclass"
    assert [c["name"] for c in model["classes"]] == NAMES
    assert model["classes"][1]["color"] == [255, 0, 0]
    assert model["input"]["channels"] == 3 and model["input"]["training_crop_size"] == 64
    schema = httpx.get(f"{server}/openapi.json").json()
    assert "/predict" in schema["paths"] and "/health" in schema["paths"] and "/model" in schema["paths"]
    assert httpx.get(f"{server}/docs").status_code == 200
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and 'id="drop"' in page.text and 'type="file"' in page.text


def test_predict_png_matches_the_predictor(server, predictor):
    image = rgb_image()
    response = post(server, png_bytes(image))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    labels = np.asarray(Image.open(io.BytesIO(response.content)))
    expected = predictor.predict(image).labels
    assert labels.shape == (40, 56)
    np.testing.assert_array_equal(labels, expected)


def test_predict_json_shares_agree_with_label_png(server):
    data = png_bytes(rgb_image(seed=3))
    labels = np.asarray(Image.open(io.BytesIO(post(server, data).content)))
    body = post(server, data, fmt="json").json()
    assert (body["width"], body["height"]) == (56, 40)
    counts = np.bincount(labels.reshape(-1), minlength=3)
    assert [c["pixels"] for c in body["classes"]] == counts.tolist()
    assert [c["name"] for c in body["classes"]] == NAMES
    assert sum(c["share"] for c in body["classes"]) == pytest.approx(1.0)


def test_predict_overlay_and_gray_input(server):
    gray = rgb_image()[..., 0]
    response = post(server, png_bytes(gray), fmt="overlay")
    assert response.status_code == 200
    overlay = np.asarray(Image.open(io.BytesIO(response.content)))
    assert overlay.shape == (40, 56, 3)
    shares = [float(s) for s in response.headers["x-class-shares"].split(",")]
    assert len(shares) == 3 and sum(shares) == pytest.approx(1.0, abs=1e-4)
    legend = httpx.post(f"{server}/predict", params={"format": "overlay", "legend": "true"},
                        files={"file": ("x.png", png_bytes(gray), "image/png")})
    assert np.asarray(Image.open(io.BytesIO(legend.content))).shape[1] > 56  # legend panel appended


def test_unknown_format_is_422(server):
    assert post(server, png_bytes(rgb_image()), fmt="gif").status_code == 422


def test_body_over_the_limit_is_413(server):
    big = os.urandom(300 * 1024)
    response = post(server, big)
    assert response.status_code == 413 and "limit" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit must hold while the body streams in
        boundary = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"
        yield boundary
        for _ in range(40):
            yield os.urandom(16 * 1024)
        yield b"\r\n--xyz--\r\n"

    streamed = httpx.post(f"{server}/predict", content=chunks(),
                          headers={"content-type": "multipart/form-data; boundary=xyz"}, timeout=60)
    assert streamed.status_code == 413 and "limit" in streamed.json()["detail"]


def test_not_an_image_is_415(server):
    response = post(server, b"hello, I am a text file\n" * 10, name="notes.txt")
    assert response.status_code == 415 and "not an image" in response.json()["detail"]


def test_truncated_image_is_422(server):
    data = png_bytes(rgb_image(200, 200))
    response = post(server, data[: len(data) // 2])
    assert response.status_code == 422 and "truncated" in response.json()["detail"]


def test_decompression_bomb_refused_from_header(server):
    # A valid 1x1 PNG whose header is rewritten to claim 60000 x 60000 pixels: refused before decoding.
    data = bytearray(png_bytes(np.zeros((1, 1), dtype=np.uint8)))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", 60000, 60000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    response = post(server, bytes(data))
    assert response.status_code == 413
    assert "pixels" in response.json()["detail"] or "bomb" in response.json()["detail"]


class SpyModel:
    """Wraps a predictor's model_fn: records each forward pass's batch size; the first pass
    waits for `gate`, so the requests that arrive meanwhile must queue up behind it."""

    def __init__(self, model_fn):
        self.model_fn = model_fn
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, x):
        self.entered.set()
        if not self.batch_sizes:
            assert self.gate.wait(30)
        self.batch_sizes.append(int(x.shape[0]))
        return self.model_fn(x)


def argmax_rgb_predictor() -> Predictor:
    """A 1x1 conv with identity weights: each pixel's class is its strongest of R, G, B, so
    different random images get clearly different label maps (the tiny untrained U-Net's may not)."""
    import torch

    conv = torch.nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        conv.bias.zero_()
    return Predictor.from_model(conv, Task(kind="multiclass", num_classes=3), mean=[0.5] * 3, std=[0.25] * 3,
                                class_names=NAMES, device="cpu", precision="fp32")


def test_concurrent_requests_share_batches_and_get_their_own_answers():
    predictor = argmax_rgb_predictor()
    spy = SpyModel(predictor.model_fn)
    batched = dataclasses.replace(predictor, model_fn=spy)  # batch_size 4 images per forward pass
    images = [rgb_image(seed=100 + i) for i in range(7)]
    settings = ServeSettings(max_batch=8, max_queue=16)
    with serving(create_app(batched, settings)) as url:
        responses: dict[int, httpx.Response] = {}

        def send(i: int) -> None:
            responses[i] = post(url, png_bytes(images[i]))

        threads = [threading.Thread(target=send, args=(0,))]
        threads[0].start()
        try:
            assert spy.entered.wait(30)  # request 0 holds the worker
            threads += [threading.Thread(target=send, args=(i,)) for i in range(1, 7)]
            for thread in threads[1:]:
                thread.start()
            deadline = time.monotonic() + 30
            while httpx.get(f"{url}/health").json()["queued"] < 6:  # requests 1..6 wait together
                assert time.monotonic() < deadline, "the requests never queued up"
                time.sleep(0.02)
        finally:
            spy.gate.set()
        for thread in threads:
            thread.join(60)
        health = httpx.get(f"{url}/health").json()
    # One micro-batch for request 0, one for the six that waited: 2 batches for 7 images,
    # and the six ran as forward passes of 4 and 2 images, not one by one.
    assert (health["batches_run"], health["images_run"]) == (2, 7)
    assert spy.batch_sizes == [1, 4, 2]
    # Each request got the answer for its own image, not a batch-mate's. The expected labels
    # come from the same batches run directly (batched float sums may differ in the last bit).
    expected = [p.labels for p in predictor.predict(images[:1]) + predictor.predict(images[1:])]
    np.testing.assert_array_equal(expected[3], np.argmax(images[3], axis=-1))  # the model is what it says
    assert all(not np.array_equal(a, b) for i, a in enumerate(expected) for b in expected[i + 1:])
    for i in range(7):
        assert responses[i].status_code == 200, responses[i].text
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(responses[i].content))), expected[i])


@pytest.mark.slow
def test_load_500_requests_16_concurrent_no_errors(predictor):
    with serving(create_app(predictor, ServeSettings(), name="tiny")) as url:  # default limits (queue 32)
        out = subprocess.run([sys.executable, "-m", "pixelwise.bench.bench_serve", "--url", url,
                              "--requests", "500", "--concurrency", "16", "--size", "64"],
                             capture_output=True, text=True, timeout=280)
        health = httpx.get(f"{url}/health").json()
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == 0 and result["status"] == {"200": 500}, result
    assert result["latency_ms"]["max"] < 60_000  # none came near the service's request time limit
    # Every request ran exactly once, and with 16 in flight they shared micro-batches.
    assert health["images_run"] == 500 and health["batches_run"] < 500, health


def test_overload_is_503_and_timeout_is_504(predictor):
    gated = GatedPredictor(predictor)
    settings = ServeSettings(max_queue=1, max_batch=1, request_timeout_s=3)
    data = png_bytes(rgb_image())
    with serving(create_app(gated, settings)) as url:
        results = {}

        def send(key):
            results[key] = post(url, data)

        first = threading.Thread(target=send, args=("first",))
        first.start()
        assert gated.entered.wait(30)  # the worker holds request 1
        second = threading.Thread(target=send, args=("second",))
        second.start()
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").json()["queued"] < 1:  # request 2 waits in the queue
            assert time.monotonic() < deadline
            time.sleep(0.02)
        third = post(url, data)
        assert third.status_code == 503 and "overloaded" in third.json()["detail"]
        assert third.headers["retry-after"] == "1"
        first.join(30)
        second.join(30)
        assert results["first"].status_code == 504 and "longer than" in results["first"].json()["detail"]
        gated.gate.set()
        assert post(url, data).status_code == 200  # the service recovers


def test_inference_queue_isolates_a_failing_item():
    seen_batches = []
    gate = threading.Event()

    def fn(items):
        gate.wait(10)
        seen_batches.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]

    async def scenario():
        queue = InferenceQueue(fn, max_queue=8, max_batch=8)
        queue.start()
        tasks = [asyncio.create_task(queue.submit(item, timeout=10)) for item in ("x", "y", "bad", "z")]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(queue.stop)
        return results

    results = asyncio.run(scenario())
    assert results[:2] == ["X", "Y"] and results[3] == "Z"
    assert isinstance(results[2], ValueError)
    assert any(len(batch) > 1 for batch in seen_batches)  # they were batched, then retried one by one


def test_inference_queue_refuses_when_full():
    gate = threading.Event()

    async def scenario():
        queue = InferenceQueue(lambda items: (gate.wait(10), items)[1], max_queue=1, max_batch=1)
        queue.start()
        running = asyncio.create_task(queue.submit(1, timeout=10))
        await asyncio.sleep(0.1)  # worker took item 1 and blocks
        waiting = asyncio.create_task(queue.submit(2, timeout=10))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await queue.submit(3, timeout=10)
        gate.set()
        assert await running == 1 and await waiting == 2
        await asyncio.to_thread(queue.stop)

    asyncio.run(scenario())


@pytest.mark.slow
def test_cli_serve_binds_loopback_and_answers(checkpoint, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pixelwise", "serve", str(checkpoint), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        model = httpx.get(f"http://127.0.0.1:{port}/model").json()
        assert model["name"] == checkpoint.stem and model["input"]["training_crop_size"] is None
        assert post(f"http://127.0.0.1:{port}", png_bytes(rgb_image())).status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)
    assert "127.0.0.1" in proc.stdout.read()


def test_cli_serve_missing_file_is_clean_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pixelwise", "serve", str(tmp_path / "nope.pt")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "nope.pt" in result.stderr
