"""`pixelwise serve` as a Label Studio ML backend, against real servers on 127.0.0.1.

The service runs under uvicorn; a second real HTTP server stands in for Label Studio's file
serving: it serves /data/upload/... only to requests carrying `Authorization: Token <key>`.
Requests and responses have the shapes of HumanSignal/label-studio-ml-backend at commit
d02cedf35d0e5d21f2f437c120174c62f66bf57a (label_studio_ml/api.py: /setup, /predict, /health,
/webhook; label_studio_ml/exceptions.py: error bodies {"status", "detail", ...}) and of the
/setup request Label Studio sends (label_studio/ml/api_connector.py in HumanSignal/label-studio:
project, schema, hostname, access_token). label-studio-ml itself does not install here without
pinning Flask 1.1 (and label-studio-sdk would replace numpy), so payloads are written per those files.
"""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from pixelwise.bench.bench_serve import serving  # noqa: E402

from pixelwise.data.annotations import labelstudio  # noqa: E402
from pixelwise.data.annotations.model import ClassMap  # noqa: E402
from pixelwise.data.annotations.rasterise import render  # noqa: E402
from pixelwise.data.classes import ClassTable, default_colors  # noqa: E402
from pixelwise.inference import Predictor  # noqa: E402
from pixelwise.serve import ServeSettings, create_app  # noqa: E402
from pixelwise.tasks import Task  # noqa: E402
from test_prelabels import COLOURS, NAMES, ColourModel, design, softmax_max  # noqa: E402

TOKEN = "secret-token-123"


def config(*controls: str, labels=("cell", "nucleus"), extra: str = "") -> str:
    body = "".join(f'<Label value="{v}"{extra}/>' for v in labels)
    tags = {"polygon": f'<PolygonLabels name="poly" toName="img">{body}</PolygonLabels>',
            "brush": f'<BrushLabels name="paint" toName="img">{body}</BrushLabels>',
            "rect": f'<RectangleLabels name="box" toName="img">{body}</RectangleLabels>'}
    return '<View><Image name="img" value="$picture"/>' + "".join(tags[c] for c in controls) + "</View>"


class FileServer:
    """A loopback stand-in for Label Studio's /data/upload/: checks the token, records headers."""

    def __init__(self, files: dict[str, bytes], token: str | None):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                seen.append((self.path, self.headers.get("Authorization")))
                if token is not None and self.headers.get("Authorization") != f"Token {token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                data = files.get(self.path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def label_studio():
    server = FileServer({"/data/upload/1/cells.png": png(COLOURS[design()]),
                         "/data/upload/1/notes.png": b"these are notes, not pixels\n"}, TOKEN)
    yield server
    server.close()


@pytest.fixture(scope="module")
def other_host():
    server = FileServer({"/public/cells.png": png(COLOURS[design()])}, None)
    yield server
    server.close()


@pytest.fixture(scope="module")
def backend():
    predictor = Predictor.from_model(ColourModel(), Task("multiclass", num_classes=3), mean=[0, 0, 0], std=[1, 1, 1],
                                     class_names=NAMES, device="cpu", precision="fp32")
    with serving(create_app(predictor, ServeSettings(), name="cells")) as url:
        with httpx.Client(base_url=url + "/label-studio", timeout=60) as client:
            yield client


def setup(client, schema: str, project: str = "1.1700000000", token: str = TOKEN, hostname: str | None = None,
          server=None) -> httpx.Response:
    return client.post("/setup", json={"project": project, "schema": schema,
                                       "hostname": hostname or server.url, "access_token": token})


def predict(client, schema: str, image: str = "/data/upload/1/cells.png", project: str = "1.1700000000",
            task_id: int = 7) -> httpx.Response:
    return client.post("/predict", json={
        "tasks": [{"id": task_id, "data": {"picture": image}, "annotations": [], "predictions": []}],
        "model_version": "", "project": project, "label_config": schema,
        "params": {"login": None, "password": None, "context": None}})


def read_back(result: list[dict], path: Path, names=NAMES) -> np.ndarray:
    """The results as a Label Studio export, through pixelwise's reader, as a label map."""
    table = ClassTable(list(names), default_colors(len(names)), 255)
    tasks = [{"id": 7, "data": {"image": "cells.png"}, "annotations": [{"id": 1, "result": result}]}]
    Image.fromarray(COLOURS[design()]).save(path.parent / "cells.png")
    aset = labelstudio.read(path, tasks, ClassMap(table, fixed=True), [path.parent])
    assert not aset.errors, aset.errors
    return render(aset.images[0], 0)


def test_health_answers_as_the_reference_backend(backend):
    for path in ("/health", "/"):
        r = backend.get(path)
        assert r.status_code == 200 and r.json()["status"] == "UP"
        assert r.json()["model_version"] == "pixelwise-cells"
    assert backend.get("/metrics").json() == {}


def test_setup_then_predict_polygons_and_brushes_with_the_token(backend, label_studio, tmp_path):
    schema = config("polygon", "brush")
    r = setup(backend, schema, server=label_studio)
    assert r.status_code == 200 and r.json() == {"model_version": "pixelwise-cells"}
    r = predict(backend, schema)
    assert r.status_code == 200, r.text
    (prediction,) = r.json()["results"]
    assert prediction["model_version"] == "pixelwise-cells"
    conf = softmax_max(COLOURS[design()])
    assert prediction["score"] == pytest.approx(conf.mean(), abs=1e-5)
    result = prediction["result"]
    assert {(x["type"], x["from_name"], x["to_name"]) for x in result} == {
        ("polygonlabels", "poly", "img"), ("brushlabels", "paint", "img")}
    assert all(x["original_width"] == 52 and x["original_height"] == 40 for x in result)
    assert np.array_equal(read_back(result, tmp_path / "export.json"), design())
    # the image came from the Label Studio stand-in, with the token sent to /setup
    assert ("/data/upload/1/cells.png", f"Token {TOKEN}") in label_studio.seen


def test_brush_only_and_polygon_only_configs(backend, label_studio, tmp_path):
    schema = config("brush")
    assert setup(backend, schema, project="2.1", server=label_studio).status_code == 200
    r = predict(backend, schema, project="2.1")
    result = r.json()["results"][0]["result"]
    assert {x["type"] for x in result} == {"brushlabels"}
    assert np.array_equal(read_back(result, tmp_path / "b.json"), design())

    schema = config("polygon")
    assert setup(backend, schema, project="3.1", server=label_studio).status_code == 200
    result = predict(backend, schema, project="3.1").json()["results"][0]["result"]
    assert {x["type"] for x in result} == {"polygonlabels"}
    # polygons cannot hold holes: the ring's background hole is filled, and the nuclei inside
    # holes come later (regions go largest first), so they stay on top
    expected = design()
    hole = expected[8:16, 8:20]
    hole[hole == 0] = 1
    assert np.array_equal(read_back(result, tmp_path / "p.json"), expected)


def test_label_mapped_with_predicted_values(backend, label_studio, tmp_path):
    schema = ('<View><Image name="img" value="$picture"/><PolygonLabels name="poly" toName="img">'
              '<Label value="Cell body" predicted_values="cell"/><Label value="Nucleus"/></PolygonLabels>'
              '<BrushLabels name="paint" toName="img"><Label value="Cell body" predicted_values="cell"/>'
              '<Label value="Nucleus"/></BrushLabels></View>')
    assert setup(backend, schema, project="4.1", server=label_studio).status_code == 200
    result = predict(backend, schema, project="4.1").json()["results"][0]["result"]
    labels = {(x["value"].get("polygonlabels") or x["value"].get("brushlabels"))[0] for x in result}
    assert labels == {"Cell body", "Nucleus"}   # "Nucleus" matches class "nucleus" case-insensitively
    assert np.array_equal(read_back(result, tmp_path / "m.json", ["background", "Cell body", "Nucleus"]), design())


def _is_error(r: httpx.Response, status: int, *words: str) -> None:
    body = r.json()
    assert r.status_code == status and body["status"] == status, r.text
    for word in words:
        assert word in body["detail"], (word, body["detail"])


def test_bad_input_gets_errors_in_the_protocol_shape_and_the_service_keeps_serving(
        backend, label_studio, other_host, monkeypatch):
    schema = config("polygon", "brush")
    # a token Label Studio would refuse
    assert setup(backend, schema, project="5.1", token="wrong", server=label_studio).status_code == 200
    _is_error(predict(backend, schema, project="5.1"), 502, "task 7", "HTTP 401", "access token")
    # an image Label Studio does not have
    assert setup(backend, schema, project="6.1", server=label_studio).status_code == 200
    _is_error(predict(backend, schema, image="/data/upload/1/gone.png", project="6.1"), 502, "task 7", "HTTP 404",
              "gone.png")
    # an unreachable host
    _is_error(predict(backend, schema, image="http://127.0.0.1:1/x.png", project="6.1"), 502, "cannot be fetched")
    # a file that is not an image
    _is_error(predict(backend, schema, image="/data/upload/1/notes.png", project="6.1"), 415, "task 7", "notes.png")
    # a label config without segmentation controls, or not XML at all
    _is_error(setup(backend, config("rect"), server=label_studio), 422, "PolygonLabels or BrushLabels",
              "RectangleLabels")
    _is_error(predict(backend, config("rect"), project="6.1"), 422, "PolygonLabels or BrushLabels")
    _is_error(setup(backend, "<View><Image", server=label_studio), 422, "not valid XML")
    # a label the model does not have
    r = setup(backend, config("polygon", labels=("cell", "mitochondrion")), server=label_studio)
    _is_error(r, 422, "'mitochondrion'", "background, cell, nucleus")
    assert r.json()["result"]["unknown_labels"] == ["mitochondrion"]
    _is_error(predict(backend, config("polygon", labels=("cell", "mitochondrion")), project="6.1"), 422,
              "mitochondrion")
    # malformed requests
    _is_error(backend.post("/predict", content=b"{not json", headers={"content-type": "application/json"}), 400,
              "not JSON")
    _is_error(backend.post("/predict", json={"tasks": "x", "label_config": schema}), 400, "tasks")
    _is_error(backend.post("/predict", json={"tasks": [{"id": 3, "data": {}}], "label_config": schema,
                                             "project": "6.1"}), 422, "task 3", "data.picture")
    # a relative URL with neither /setup nor LABEL_STUDIO_URL to resolve it
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_HOST", raising=False)
    _is_error(predict(backend, schema, project="99.1"), 422, "LABEL_STUDIO_URL")
    # the service is still up and answers a good request
    assert backend.get("/health").json()["status"] == "UP"
    assert predict(backend, schema, project="6.1").status_code == 200


def test_token_goes_only_to_label_studio_and_env_fallback(backend, label_studio, other_host, monkeypatch):
    schema = config("polygon", "brush")
    assert setup(backend, schema, project="8.1", server=label_studio).status_code == 200
    r = predict(backend, schema, image=other_host.url + "/public/cells.png", project="8.1")
    assert r.status_code == 200, r.text
    assert other_host.seen[-1] == ("/public/cells.png", None)   # no Label Studio token to another host
    # no /setup for this project: LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, as the reference backend reads
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    assert predict(backend, schema, project="42.1").status_code == 200


def test_webhook_training_is_refused_clearly(backend):
    _is_error(backend.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}), 501,
              "pixelwise train")
    r = backend.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1}})
    assert r.status_code == 200 and r.json() == {"status": "Unknown event"}
