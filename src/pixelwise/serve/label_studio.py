"""Label Studio's ML-backend protocol, mounted by the service under /label-studio/.

In Label Studio: Settings -> Model -> Connect model, URL http://HOST:PORT/label-studio
(Label Studio appends the paths below). Shapes follow HumanSignal/label-studio-ml-backend
(label_studio_ml/api.py and exceptions.py at d02cedf3) and the requests Label Studio sends
(label_studio/ml/api_connector.py):

    GET  /health, GET /          {"status": "UP", "model_class": ..., "model_version": ...}
    POST /setup    {"project": "ID.TIMESTAMP", "schema": LABEL_CONFIG_XML, "hostname": URL,
                    "access_token": TOKEN}                       -> {"model_version": ...}
    POST /predict  {"tasks": [{"id", "data": {"image": URL}}], "project", "label_config",
                    "params": {...}}  -> {"results": [{"result": [...], "score", "model_version"}]}
                   one prediction per task, in task order
    POST /webhook  training events: this backend does not train (use `pixelwise train`)
    GET  /metrics  {}

Errors come back as the reference backend writes them: HTTP status N and
{"status": N, "detail": "what is wrong", "result": {...}}; the service keeps serving.

Images: a relative URL (/data/upload/..., /data/local-files/?d=...) is joined to the
`hostname` sent to /setup, and the `access_token` goes with it as `Authorization: Token ...`
(only to that host, as Label Studio's own tools do); without /setup, LABEL_STUDIO_URL and
LABEL_STUDIO_API_KEY from the environment. Only http(s) is fetched: no task names a file on
this server.

Results follow the labelling config: a PolygonLabels control gives polygons, a BrushLabels
control brushes (Label Studio's RLE); with both, objects with holes go out as brushes. A
`<Label value="...">` names a model class, or maps to one with predicted_values="class".
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlparse

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pixelwise.errors import PixelwiseError
from pixelwise.serve.uploads import UploadError, decode_image

log = logging.getLogger(__name__)

_CONTROLS = {"polygonlabels": "polygons", "brushlabels": "brush"}
_FETCH_TIMEOUT_S = 30.0


class BackendError(Exception):
    """A request the backend cannot answer: HTTP `status`, a `detail` for the Label Studio user."""

    def __init__(self, status: int, detail: str, **result: Any):
        super().__init__(detail)
        self.status, self.detail, self.result = status, detail, result


def _error(status: int, detail: str, **result: Any) -> JSONResponse:
    return JSONResponse({"status": status, "detail": detail, "result": result}, status_code=status)


# --------------------------------------------------------------------------- labelling config
@dataclass
class LabelConfig:
    """What a labelling config asks of a segmentation model."""

    image: str                      # <Image name>: results' to_name
    data_key: str                   # <Image value="$key">: the task data field with the URL
    polygons: str | None = None     # <PolygonLabels name>
    brush: str | None = None        # <BrushLabels name>
    labels: dict[str, list[str]] = field(default_factory=dict)   # label -> model class names it stands for

    def class_labels(self, class_names: list[str]) -> dict[int, str]:
        """Model class id -> Label Studio label; BackendError naming any label the model lacks."""
        exact = {n: i for i, n in enumerate(class_names)}
        folded = {n.casefold(): i for i, n in enumerate(class_names)}
        out: dict[int, str] = {}
        unknown = []
        for label, wanted in self.labels.items():
            ids = [exact.get(n, folded.get(n.casefold())) for n in wanted]
            if any(i is None for i in ids):
                unknown.append(label)
                continue
            for i in ids:
                out.setdefault(i, label)
        if unknown:
            raise BackendError(422, f"label config asks for {', '.join(map(repr, unknown))}, which the model does "
                                    f"not have (its classes: {', '.join(class_names)}); rename the label or map it "
                                    "to a class with predicted_values=\"class name\"", unknown_labels=unknown,
                               model_classes=class_names)
        return out


def parse_label_config(text: Any) -> LabelConfig:
    """The first <Image> with a PolygonLabels or BrushLabels control on it; BackendError otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise BackendError(422, "no label config sent (expected the project's labelling config XML)")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise BackendError(422, f"label config is not valid XML: {exc}") from None
    images = {el.get("name"): el for el in root.iter() if el.tag.lower() == "image" and el.get("name")}
    found: dict[str, LabelConfig] = {}
    seen = []
    for el in root.iter():
        kind = _CONTROLS.get(el.tag.lower())
        if el.get("toName") is not None:
            seen.append(el.tag)
        if kind is None or el.get("toName") not in images:
            continue
        image = images[el.get("toName")]
        value = image.get("value", "")
        cfg = found.setdefault(el.get("toName"), LabelConfig(el.get("toName"), value.lstrip("$")))
        if getattr(cfg, kind) is None:
            setattr(cfg, kind, el.get("name"))
            labels = {}
            for lab in el.iter():
                if lab.tag.lower() == "label" and lab.get("value") is not None:
                    predicted = [p.strip() for p in (lab.get("predicted_values") or "").split(",") if p.strip()]
                    labels[lab.get("value")] = predicted or [lab.get("value")]
            if cfg.labels and set(cfg.labels) != set(labels):
                raise BackendError(422, "the PolygonLabels and BrushLabels controls on one image must list the "
                                        "same labels")
            cfg.labels = labels
    if not found:
        raise BackendError(422, "label config has no PolygonLabels or BrushLabels control on an Image "
                                f"(found: {', '.join(seen) or 'no controls'}); a segmentation model answers only those")
    cfg = next(iter(found.values()))
    if not cfg.data_key:
        raise BackendError(422, f'<Image name="{cfg.image}"> has no value="$field" naming the task data')
    return cfg


# --------------------------------------------------------------------------- images
@dataclass
class Connection:
    hostname: str = ""
    access_token: str = ""

    @classmethod
    def from_env(cls) -> "Connection":
        return cls(os.environ.get("LABEL_STUDIO_URL", os.environ.get("LABEL_STUDIO_HOST", "")),
                   os.environ.get("LABEL_STUDIO_API_KEY", os.environ.get("LABEL_STUDIO_ACCESS_TOKEN", "")))


def fetch_image(url: str, conn: Connection, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Download and decode a task's image; BackendError naming the URL and the problem."""
    if url.startswith("upload/"):
        url = "/data/" + url
    if not urlparse(url).scheme:
        if not conn.hostname:
            raise BackendError(422, f"image {url!r} is relative to Label Studio, but its address is unknown: "
                                    "connect the backend from Label Studio (it sends it to /setup) or set "
                                    "LABEL_STUDIO_URL")
        url = urljoin(conn.hostname.rstrip("/") + "/", url.lstrip("/"))
    scheme = urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise BackendError(422, f"image {url!r}: only http and https URLs are fetched (not {scheme}://)")
    headers = {"User-Agent": "pixelwise-label-studio-backend"}
    if conn.access_token and conn.hostname and urlparse(url).netloc == urlparse(conn.hostname).netloc:
        headers["Authorization"] = f"Token {conn.access_token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_FETCH_TIMEOUT_S) as resp:
            data = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        hint = " (check the access token Label Studio sent to /setup, or LABEL_STUDIO_API_KEY)" \
            if exc.code in (401, 403) else ""
        raise BackendError(502, f"image {url!r}: Label Studio answered HTTP {exc.code}{hint}", url=url) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BackendError(502, f"image {url!r} cannot be fetched: {reason}", url=url) from None
    if len(data) > max_bytes:
        raise BackendError(413, f"image {url!r} is larger than {max_bytes} bytes", url=url)
    try:
        return decode_image(data, max_pixels)
    except UploadError as exc:
        raise BackendError(exc.status, f"image {url!r}: {exc.message}", url=url) from None


# --------------------------------------------------------------------------- the app
def create_backend(predictor: Any, settings: Any, *, name: str = "model") -> FastAPI:
    """The ML-backend sub-application around `predictor` (mounted at /label-studio by create_app)."""
    from pixelwise.data.annotations.labelstudio import regions
    from pixelwise.inference.prelabels import confidence_map

    version = f"pixelwise-{name}"
    connections: dict[str, Connection] = {}
    lock = threading.Lock()  # one Label Studio prediction at a time beside the service's own queue
    app = FastAPI(title="pixelwise: Label Studio ML backend", docs_url=None, redoc_url=None, openapi_url=None)

    async def body(request: Request) -> dict:
        try:
            data = await request.json()
        except ValueError:
            raise BackendError(400, "request body is not JSON") from None
        if not isinstance(data, dict):
            raise BackendError(400, "request body must be a JSON object")
        return data

    def project_id(data: dict) -> str:
        return str(data.get("project") or "").split(".", 1)[0]

    def predict_task(task: Any, cfg: LabelConfig, labels_for: dict[int, str], conn: Connection) -> dict:
        if not isinstance(task, dict):
            raise BackendError(400, "each task must be an object with 'data'")
        tid = task.get("id", "?")
        url = (task.get("data") or {}).get(cfg.data_key) if isinstance(task.get("data"), dict) else None
        if not isinstance(url, str) or not url:
            raise BackendError(422, f"task {tid}: no image URL in data.{cfg.data_key}", task=tid)
        try:
            image = fetch_image(url, conn, settings.max_upload_bytes, settings.max_pixels)
        except BackendError as exc:
            raise BackendError(exc.status, f"task {tid}: {exc.detail}", task=tid, **exc.result) from None
        try:
            with lock:
                prediction = predictor.predict(image, return_probabilities=not predictor.decodes)
            confidence = confidence_map(prediction, predictor.task.kind)
            result = regions(prediction.labels, labels_for, polygons=cfg.polygons, brush=cfg.brush,
                             to_name=cfg.image, confidence=confidence)
        except PixelwiseError as exc:  # e.g. an image with channels the model was not trained on
            raise BackendError(422, f"task {tid}: {exc}", task=tid) from None
        except Exception as exc:  # noqa: BLE001 - Label Studio gets a message, the log the traceback
            log.exception("label studio: task %s failed", tid)
            raise BackendError(500, f"task {tid}: prediction failed ({type(exc).__name__}: {exc})", task=tid) from None
        out: dict[str, Any] = {"result": result, "model_version": version}
        if confidence is not None:
            out["score"] = round(float(confidence.mean()), 6)
        return out

    @app.exception_handler(BackendError)
    async def backend_error(request: Request, exc: BackendError) -> JSONResponse:
        log.warning("label studio %s: %s", request.url.path, exc.detail)
        return _error(exc.status, exc.detail, **exc.result)

    @app.get("/")
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "UP", "model_class": "pixelwise", "model_version": version}

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return {}

    @app.post("/setup")
    async def setup(request: Request) -> dict[str, Any]:
        data = await body(request)
        cfg = parse_label_config(data.get("schema"))
        cfg.class_labels(list(predictor.class_names))  # a label the model lacks: say so now
        env = Connection.from_env()
        connections[project_id(data)] = Connection(str(data.get("hostname") or env.hostname),
                                                   str(data.get("access_token") or env.access_token))
        return {"model_version": version}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        data = await body(request)
        tasks = data.get("tasks")
        if not isinstance(tasks, list):
            raise BackendError(400, "'tasks' must be a list of tasks")
        if predictor.task.kind == "multilabel":
            raise BackendError(422, "a multilabel model gives pixels several classes; Label Studio regions hold one")
        cfg = parse_label_config(data.get("label_config"))
        labels_for = cfg.class_labels(list(predictor.class_names))
        conn = connections.get(project_id(data)) or Connection.from_env()
        results = []
        for task in tasks:
            results.append(await run_in_threadpool(predict_task, task, cfg, labels_for, conn))
        return {"results": results}

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        data = await body(request)
        if data.get("action") == "START_TRAINING":
            raise BackendError(501, "this backend does not train: export the annotations and run "
                                    "`pixelwise train` (docs/labelling.md), then restart `pixelwise serve`")
        return JSONResponse({"status": "Unknown event"})

    @app.post("/train")
    async def train() -> JSONResponse:
        raise BackendError(501, "this backend does not train: export the annotations and run `pixelwise train`")

    return app
