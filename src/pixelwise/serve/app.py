"""The HTTP service: a FastAPI app around one `Predictor`.

    POST /predict?format=png|json|overlay   multipart field `file`: an image
         &uncertainty=entropy|margin        png: the 16-bit uncertainty map instead of labels,
                                            overlay: its heat overlay, json: adds the mean
    GET  /health, GET /model, GET / (a page to drop an image), /docs, /openapi.json

Hardening: a body-size cap enforced while bytes arrive (413), header-only size checks
before decoding (413/415/422), a per-request time limit (504), a bounded inference queue
(503 when full). No request ever names a file on the server.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, File, Query, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from pixelwise.errors import PixelwiseError
from pixelwise.serve.batching import InferenceQueue, Overloaded
from pixelwise.serve.label_studio import create_backend
from pixelwise.serve.uploads import UploadError, decode_image

log = logging.getLogger(__name__)


@dataclass
class ServeSettings:
    """Limits of the service; the defaults suit a single CPU or GPU box."""

    max_upload_bytes: int = 20 * 1024 * 1024   # whole request body
    max_pixels: int = 50_000_000                # decoded width * height
    request_timeout_s: float = 60.0             # whole request, queueing and inference included
    max_queue: int = 32                         # waiting requests before 503
    max_batch: int = 8                          # images per micro-batch
    overlay_alpha: float = 0.5


class _BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    """Pure ASGI middleware: caps the request body as it streams in and bounds request time.

    Checking `Content-Length` alone is not enough (chunked uploads have none), so the
    receive channel itself counts bytes; the multipart parser never sees more than the cap.
    """

    def __init__(self, app: Any, max_body: int, timeout_s: float):
        self.app, self.max_body, self.timeout_s = app, max_body, timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _send_json(send, 413, f"request body of {int(length)} bytes exceeds the limit of {self.max_body} bytes")
            return
        received = 0
        started = too_large = False
        too_large_detail = f"request body exceeds the limit of {self.max_body} bytes"

        async def limited_receive() -> dict:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    too_large = True
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if too_large:
                # The framework may turn our exception into its own 400 "error parsing the
                # body"; the client deserves the real reason instead.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_json(send, 413, too_large_detail)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, limited_receive, tracking_send), self.timeout_s)
        except _BodyTooLarge:
            if not started:
                await _send_json(send, 413, too_large_detail)
        except asyncio.TimeoutError:
            if not started:
                await _send_json(send, 504, f"request took longer than {self.timeout_s:g} s")


async def _send_json(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _png(array: np.ndarray, palette: list[tuple[int, int, int]] | None = None) -> bytes:
    image = Image.fromarray(array)
    if palette is not None:
        # Palette PNG: pixel values stay the class ids, viewers still show colours.
        table = np.zeros((256, 3), dtype=np.uint8)
        table[: len(palette)] = palette
        image.putpalette(table.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # speed over a few percent of size
    return buffer.getvalue()


def model_description(predictor: Any, name: str, input_size: int | None, settings: ServeSettings) -> dict[str, Any]:
    """What GET /model returns: enough for a client to interpret label PNGs."""
    return {
        "name": name,
        "task": predictor.task.kind,
        "num_classes": predictor.task.num_classes,
        "ignore_index": predictor.task.ignore_index,
        "classes": [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(zip(predictor.class_names, predictor.colors))],
        "input": {
            "channels": predictor.preprocess.in_channels,
            "training_crop_size": input_size,  # any H, W is accepted; large images are tiled
            "max_pixels": settings.max_pixels,
            "max_upload_bytes": settings.max_upload_bytes,
        },
    }


def create_app(predictor: Any, settings: ServeSettings | None = None, *, name: str = "model",
               input_size: int | None = None) -> FastAPI:
    """Build the service around `predictor` (a pixelwise.inference.Predictor or the same interface)."""
    settings = settings or ServeSettings()
    description = model_description(predictor, name, input_size, settings)
    page = (resources.files("pixelwise.serve") / "static" / "index.html").read_text(encoding="utf-8")

    def run_batch(images: list[np.ndarray]) -> list[Any]:
        results = predictor.predict(images)  # same-size images share a forward pass
        return list(results)

    inference = InferenceQueue(run_batch, max_queue=settings.max_queue, max_batch=settings.max_batch)
    # Requests that ask for uncertainty need probabilities: their own queue, same limits.
    uncertain = InferenceQueue(_uncertainty_batches(predictor), max_queue=settings.max_queue,
                               max_batch=settings.max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        inference.start()
        uncertain.start()
        try:
            yield
        finally:
            await run_in_threadpool(inference.stop)
            await run_in_threadpool(uncertain.stop)

    app = FastAPI(title="pixelwise segmentation service", version="1", lifespan=lifespan,
                  description=f"Semantic segmentation with `{name}` ({predictor.task.kind}, "
                              f"{predictor.task.num_classes} classes).")
    app.state.inference = inference
    # The hard cap sits a little above the inference timeout so that a slow model gets the
    # more precise 504 from the handler; the cap still bounds slow uploads.
    app.add_middleware(GuardMiddleware, max_body=settings.max_upload_bytes, timeout_s=settings.request_timeout_s + 5)
    app.state.settings = settings

    app.mount("/label-studio", create_backend(predictor, settings, name=name))  # Label Studio's ML-backend protocol

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and load: queued requests and the queue limit."""
        return {"status": "ok", "queued": inference.pending, "max_queue": inference.max_queue,
                "batches_run": inference.batches_run, "images_run": inference.items_run}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        """Model name, task, classes with colours, and input expectations."""
        return description

    @app.post(
        "/predict",
        responses={
            200: {"content": {"image/png": {}, "application/json": {}},
                  "description": "png: palette PNG of class ids; overlay: RGB PNG; json: class pixel shares"},
            413: {"description": "upload or image too large"}, 415: {"description": "not an image"},
            422: {"description": "corrupt image"}, 503: {"description": "overloaded, retry later"},
            504: {"description": "timed out"},
        },
    )
    async def predict(
        file: UploadFile = File(..., description="an image file (PNG, JPEG, TIFF, ...)"),
        format: Literal["png", "json", "overlay"] = Query("png", description="what to return"),
        legend: bool = Query(False, description="overlay only: append a legend of the classes present"),
        uncertainty: Literal["entropy", "margin", "tta-variance"] | None = Query(
            None, description="png: return the per-pixel uncertainty (16-bit, 0..65535 = 0..1); overlay: as heat "
                              "over the image; json: add the image's mean; header X-Uncertainty: the mean"),
    ) -> Response:
        """Segment one uploaded image."""
        data = await file.read()
        try:
            image = await run_in_threadpool(decode_image, data, settings.max_pixels)
        except UploadError as exc:
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        umap = None
        try:
            if uncertainty is None:
                prediction = await inference.submit(image, timeout=settings.request_timeout_s)
            else:
                prediction, umap = await uncertain.submit((image, uncertainty), timeout=settings.request_timeout_s)
        except Overloaded as exc:
            return JSONResponse({"detail": f"service overloaded ({exc}); retry later"}, status_code=503,
                                headers={"Retry-After": "1"})
        except asyncio.TimeoutError:
            return JSONResponse({"detail": f"inference took longer than {settings.request_timeout_s:g} s"}, status_code=504)
        except PixelwiseError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        except Exception:  # noqa: BLE001 - the client gets a message, the log gets the traceback
            log.exception("inference failed")
            return JSONResponse({"detail": "inference failed (see the server log)"}, status_code=500)
        labels = prediction.labels
        shares = predictor.class_shares(labels)
        share_header = ",".join(f"{s:.6f}" for s in shares)
        if format == "json":
            counts = np.rint(shares * labels.shape[-1] * labels.shape[-2])
            answer = {
                "width": int(labels.shape[-1]), "height": int(labels.shape[-2]), "task": predictor.task.kind,
                "classes": [{"id": i, "name": n, "color": list(c), "share": float(s), "pixels": int(k)}
                            for i, (n, c, s, k) in enumerate(zip(predictor.class_names, predictor.colors, shares, counts))],
            }
            if umap is not None:
                answer["uncertainty"] = {"method": uncertainty, "mean": float(umap.mean())}
            return JSONResponse(answer)
        if umap is not None:
            body = await run_in_threadpool(_render_uncertainty, image, umap, format)
            return Response(body, media_type="image/png",
                            headers={"X-Class-Shares": share_header, "X-Uncertainty": f"{float(umap.mean()):.6f}"})
        body = await run_in_threadpool(_render, image, labels, format, legend, predictor, settings.overlay_alpha, shares)
        return Response(body, media_type="image/png", headers={"X-Class-Shares": share_header})

    return app


def _render(image: np.ndarray, labels: np.ndarray, format: str, legend: bool, predictor: Any,
            alpha: float, shares: np.ndarray) -> bytes:
    from pixelwise import visualize

    if format == "png":
        if labels.ndim == 3:  # multilabel: bit c of each pixel = class c (up to 8 classes)
            bits = np.zeros(labels.shape[1:], dtype=np.uint8)
            for c in range(min(labels.shape[0], 8)):
                bits |= (labels[c] == 1).astype(np.uint8) << c
            return _png(bits)
        return _png(labels.astype(np.uint8), palette=list(predictor.colors))
    rgb = visualize.overlay(image, labels, predictor.colors, alpha=alpha, ignore_index=predictor.task.ignore_index)
    if legend:
        rgb = visualize.add_legend(rgb, predictor.class_names, predictor.colors,
                                   present=[i for i, s in enumerate(shares) if s > 0])
    return _png(rgb)


def _uncertainty_batches(predictor: Any) -> Any:
    """Queue function: [(image, method), ...] -> [(Prediction, uncertainty map), ...], one
    forward per method present in the batch."""

    def run(items: list[tuple[np.ndarray, str]]) -> list[Any]:
        from pixelwise.inference.uncertainty import predict_with_uncertainty

        results: list[Any] = [None] * len(items)
        for method in dict.fromkeys(m for _, m in items):
            chosen = [i for i, (_, m) in enumerate(items) if m == method]
            for i, pair in zip(chosen, predict_with_uncertainty(predictor, [items[i][0] for i in chosen], method)):
                results[i] = pair
        return results

    return run


def _render_uncertainty(image: np.ndarray, umap: Any, format: str) -> bytes:
    from pixelwise.inference.uncertainty import heat_overlay, to_png16

    if format == "png":
        return _png(to_png16(umap))
    return _png(heat_overlay(image, umap.numpy()))
