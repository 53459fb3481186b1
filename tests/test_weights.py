"""Pretrained weights: catalogue, resumable verified downloads, cache, strict loading, recipes.

A real HTTP server on loopback (http.server in a thread) serves generated weight files and
misbehaves on purpose: wrong bytes, short bodies, connections dropped midway, Range
ignored. Nothing here reaches the internet; the catalogue is replaced by entries that
point at the loopback server.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from pixelwise.cli import main
from pixelwise.errors import WeightsError
from pixelwise.models import create_model
from pixelwise.models.encoders import create_encoder
from pixelwise.weights import catalogue as cat
from pixelwise.weights import add, cached, fetch, file_path, load_into_encoder, load_pretrained, partial_path, verify
from pixelwise.weights.catalogue import WeightsEntry


# ----------------------------------------------------------------------------- server
class Server:
    """Serves `files` (path -> bytes) with Range support; knobs make it fail like real ones."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_after: int | None = None   # close the connection after this many body bytes...
        self.drops_left = 0                  # ...on this many responses
        self.ignore_range = False
        self.down_after_drops = False        # answer 503 once the drops are used up
        self.redirects: dict[str, str] = {}  # path -> another path (Hugging Face redirects to its CDN)
        self.requests: list[dict[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                server.requests.append({"path": self.path, "range": self.headers.get("Range")})
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.base + server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files.get(self.path)
                if server.down_after_drops and server.drops_left == 0:
                    self.send_error(503)
                    return
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                wanted = self.headers.get("Range")
                if wanted and not server.ignore_range:
                    start = int(wanted.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_after is not None and server.drops_left > 0:
                    server.drops_left -= 1
                    self.wfile.write(body[: server.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """Each test gets its own PIXELWISE_HOME; the user's real cache is never touched."""
    path = tmp_path / "pixelwise_home"
    monkeypatch.setenv("PIXELWISE_HOME", str(path))
    monkeypatch.delenv("PIXELWISE_WEIGHTS_MIRROR", raising=False)
    return path


# ----------------------------------------------------------------------------- weights files
def tiny_resnet18_state(seed: int = 0, width: int = 8) -> dict[str, torch.Tensor]:
    """A torchvision-layout ResNet-18 state dict (encoder keys plus the fc head it drops)."""
    torch.manual_seed(seed)
    encoder = create_encoder("resnet18", 3, width=width)
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    state["fc.weight"] = torch.randn(10, width * 8)
    state["fc.bias"] = torch.randn(10)
    return state


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def make_entry(server: Server, data: bytes, *, name: str = "resnet18.imagenet", encoder: str = "resnet18",
               prefix_only: bool = False, commercial_use: bool = True, size_bytes: int | None = -1,
               file_name: str | None = None) -> WeightsEntry:
    """A catalogue entry for `data`, served by `server` under its file name."""
    sha256 = hashlib.sha256(data).hexdigest()
    file_name = file_name or f"{encoder}-{sha256[:8]}.pth"
    server.files[f"/models/{file_name}"] = data
    return WeightsEntry(
        name=name, encoder=encoder, tag=name.split(".", 1)[1], file_name=file_name,
        urls=(f"{server.base}/models/{file_name}",),
        digest=sha256[:8] if prefix_only else sha256, digest_source="test",
        size_bytes=len(data) if size_bytes == -1 else size_bytes, approx_bytes=None,
        licence="test licence" if commercial_use else "non-commercial test licence",
        licence_url="http://127.0.0.1/licence", commercial_use=commercial_use, drop=("fc.",),
    )


def use_catalogue(monkeypatch, *entries: WeightsEntry) -> None:
    monkeypatch.setattr(cat, "CATALOGUE", tuple(entries))


FAST = {"retry_wait": 0.0, "timeout": 5.0}


# ----------------------------------------------------------------------------- catalogue data
def test_catalogue_rows_are_consistent():
    """Every row: digest shape, URL carries the torchvision prefix, MiT gated, ImageNet stats."""
    names = [e.name for e in cat.CATALOGUE]
    assert len(names) == len(set(names))
    assert {e.encoder for e in cat.CATALOGUE} >= {"resnet18", "resnet34", "resnet50", "vgg16", "vgg16_bn",
                                                 "mobilenetv3_large", "mit_b0", "mit_b1", "mit_b2"}
    for entry in cat.CATALOGUE:
        assert len(entry.digest) in (8, 64) and all(c in "0123456789abcdef" for c in entry.digest)
        assert entry.urls and all(u.startswith("https://") for u in entry.urls)
        assert entry.mean == (0.485, 0.456, 0.406) and entry.std == (0.229, 0.224, 0.225)
        if entry.encoder.startswith("mit_"):
            assert not entry.commercial_use and entry.full_digest and "/resolve/" in entry.urls[0]
            assert len(entry.urls) >= 2  # a mirror of the same bytes
        else:
            # torchvision's file name carries the first 8 hex digits of the file's sha256
            assert entry.digest.startswith(entry.file_name.rsplit("-", 1)[1][:8])
            assert entry.commercial_use
    assert cat.get_weights("resnet18.imagenet").digest == \
        "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec"


def test_catalogue_torchvision_keys_map_onto_project_encoders():
    """The drop rules leave exactly the project's encoder keys of a torchvision-layout file."""
    for name, head in (("resnet18", ["fc.weight", "fc.bias"]),
                       ("vgg16_bn", ["classifier.0.weight", "classifier.6.bias"]),
                       ("mobilenetv3_large", ["classifier.0.weight", "classifier.3.bias"])):
        entry = next(e for e in cat.CATALOGUE if e.encoder == name)
        encoder = create_encoder(name, 3, **({"width": 8} if name != "mobilenetv3_large" else {}))
        state = dict(encoder.state_dict())
        state.update({k: torch.zeros(1) for k in head})
        from pixelwise.weights.load import compare, map_keys

        assert compare(map_keys(state, entry), encoder.state_dict()).ok


# ----------------------------------------------------------------------------- fetch
def test_fetch_verifies_pins_and_never_downloads_twice(server, monkeypatch, home):
    data = torch_bytes(tiny_resnet18_state())
    entry = make_entry(server, data)
    use_catalogue(monkeypatch, entry)
    found = fetch("resnet18.imagenet", **FAST)
    assert found.path == home / "weights" / "resnet18.imagenet" / entry.file_name
    assert found.path.read_bytes() == data
    pin = json.loads((found.path.parent / "pin.json").read_text())
    assert pin["sha256"] == hashlib.sha256(data).hexdigest() and pin["size"] == len(data)
    assert not partial_path(entry).exists()
    served = len(server.requests)
    assert fetch("resnet18.imagenet", **FAST).path == found.path
    model = create_model("unet_resnet", num_classes=2, encoder="resnet18", width=8)
    load_pretrained(model, "imagenet")  # loading is not fetching either
    assert len(server.requests) == served == 1
    assert torch.equal(model.encoder.conv1.weight, tiny_resnet18_state()["conv1.weight"])


def test_a_cached_file_without_its_pin_is_verified_again_not_downloaded_again(server, monkeypatch):
    data = torch_bytes(tiny_resnet18_state())
    entry = make_entry(server, data)
    use_catalogue(monkeypatch, entry)
    found = fetch(entry, **FAST)
    (found.path.parent / "pin.json").unlink()
    assert cached(entry) is None
    assert fetch(entry, **FAST).sha256 == found.sha256
    # One request, for the bytes past the end: the server answers 416 and nothing is re-sent.
    assert [r["range"] for r in server.requests] == [None, f"bytes={len(data)}-"]


def test_prefix_digest_pins_the_full_sha256_on_first_fetch(server, monkeypatch):
    data = torch_bytes(tiny_resnet18_state())
    entry = make_entry(server, data, prefix_only=True, size_bytes=None)
    use_catalogue(monkeypatch, entry)
    found = fetch(entry, **FAST)
    assert found.sha256 == hashlib.sha256(data).hexdigest() and len(found.sha256) == 64
    assert verify(entry).sha256 == found.sha256
    # A later change of the file keeps its size and its first 8 digits would pass a prefix
    # check; it cannot pass the pinned full digest.
    tampered = bytearray(data)
    tampered[-1] ^= 0xFF
    found.path.write_bytes(bytes(tampered))
    with pytest.raises(WeightsError, match="differs from the one pinned"):
        verify(entry)
    with pytest.raises(WeightsError, match="differs from the one pinned"):
        load_into_encoder(create_encoder("resnet18", 3, width=8), entry)


def test_digest_mismatch_is_refused_and_nothing_is_cached(server, monkeypatch):
    data = torch_bytes(tiny_resnet18_state())
    entry = make_entry(server, data)
    other = torch_bytes(tiny_resnet18_state(seed=1))
    assert len(other) == len(data)
    server.files[f"/models/{entry.file_name}"] = other  # the server now has different bytes
    use_catalogue(monkeypatch, entry)
    with pytest.raises(WeightsError, match="does not match resnet18.imagenet's published"):
        fetch(entry, **FAST)
    assert cached(entry) is None and not file_path(entry).exists()
    assert not partial_path(entry).exists()  # a wrong complete file is not resumed later


def test_truncated_download_fails_keeps_the_part_and_caches_nothing(server, monkeypatch):
    data = torch_bytes(tiny_resnet18_state())
    entry = make_entry(server, data)
    use_catalogue(monkeypatch, entry)
    # Every response stops after 1000 bytes and Range is ignored: no attempt makes progress.
    server.drop_after, server.drops_left, server.ignore_range = 1000, 99, True
    with pytest.raises(WeightsError, match=r"download failed .*connection closed after 1000 of"):
        fetch(entry, attempts=2, **FAST)
    assert partial_path(entry).stat().st_size == 1000
    assert cached(entry) is None and not file_path(entry).exists()


def test_complete_response_shorter_than_published_is_truncated(server, monkeypatch):
    data = torch_bytes(tiny_resnet18_state())
    entry = replace(make_entry(server, data), size_bytes=len(data) + 10)
    use_catalogue(monkeypatch, entry)
    with pytest.raises(WeightsError, match="truncated"):
        fetch(entry, **FAST)
    assert cached(entry) is None


def test_resume_after_an_interruption_uses_range(server, monkeypatch):
    data = torch_bytes(tiny_resnet18_state())
    entry = make_entry(server, data)
    use_catalogue(monkeypatch, entry)
    # First `pixelwise weights fetch`: the connection drops after 5000 bytes, then the
    # server is down (503), so the command fails and leaves the part.
    server.drop_after, server.drops_left, server.down_after_drops = 5000, 1, True
    with pytest.raises(WeightsError, match="HTTP 503.* 5000 bytes are kept .* the next fetch resumes"):
        fetch(entry, attempts=1, **FAST)
    assert partial_path(entry).stat().st_size == 5000
    # The server is back; the second fetch asks only for the rest.
    server.down_after_drops = False
    found = fetch(entry, **FAST)
    assert found.path.read_bytes() == data
    assert [r["range"] for r in server.requests] == [None, "bytes=5000-", "bytes=5000-"]


def test_retry_inside_one_fetch_resumes_until_complete(server, monkeypatch):
    data = torch_bytes(tiny_resnet18_state())
    entry = make_entry(server, data)
    use_catalogue(monkeypatch, entry)
    server.drop_after, server.drops_left = 4096, 3  # three drops, each after 4096 more bytes
    assert fetch(entry, attempts=2, **FAST).path.read_bytes() == data
    assert [r["range"] for r in server.requests] == [None, "bytes=4096-", "bytes=8192-", "bytes=12288-"]


def test_resume_follows_a_redirect_with_its_range(server, monkeypatch):
    data = torch_bytes(tiny_resnet18_state())
    entry = make_entry(server, data)
    server.redirects["/resolve/weights.bin"] = f"/models/{entry.file_name}"
    entry = replace(entry, urls=(f"{server.base}/resolve/weights.bin",))
    use_catalogue(monkeypatch, entry)
    server.drop_after, server.drops_left = 3000, 1
    assert fetch(entry, **FAST).path.read_bytes() == data
    assert [(r["path"], r["range"]) for r in server.requests] == [
        ("/resolve/weights.bin", None), (f"/models/{entry.file_name}", None),
        ("/resolve/weights.bin", "bytes=3000-"), (f"/models/{entry.file_name}", "bytes=3000-")]


def test_mirror_is_tried_when_the_first_url_is_gone(server, monkeypatch):
    data = torch_bytes(tiny_resnet18_state())
    entry = make_entry(server, data)
    entry = replace(entry, urls=(f"{server.base}/gone/{entry.file_name}",) + entry.urls)
    use_catalogue(monkeypatch, entry)
    found = fetch(entry, **FAST)
    assert found.source == entry.urls[1]
    assert [r["path"] for r in server.requests] == [f"/gone/{entry.file_name}", f"/models/{entry.file_name}"]


def test_licence_gate_needs_accept_licence_before_any_request(server, monkeypatch, capsys):
    data = torch_bytes(tiny_resnet18_state())
    entry = make_entry(server, data, commercial_use=False)
    use_catalogue(monkeypatch, entry)
    with pytest.raises(WeightsError, match="--accept-licence"):
        fetch(entry, **FAST)
    assert main(["weights", "fetch", entry.name]) == 2
    assert "--accept-licence" in capsys.readouterr().err
    assert server.requests == []
    assert main(["weights", "fetch", entry.name, "--accept-licence"]) == 0
    assert cached(entry) is not None
    assert json.loads((file_path(entry).parent / "pin.json").read_text())["licence_accepted"] is True


# ----------------------------------------------------------------------------- add (air-gapped)
def test_add_verifies_a_brought_file(server, monkeypatch, tmp_path, capsys):
    data = torch_bytes(tiny_resnet18_state())
    entry = make_entry(server, data)
    use_catalogue(monkeypatch, entry)
    assert main(["weights", "fetch", entry.name, "--print-url"]) == 0
    assert entry.urls[0] in capsys.readouterr().out
    wrong = tmp_path / entry.file_name
    wrong.write_bytes(torch_bytes(tiny_resnet18_state(seed=5)))
    assert main(["weights", "add", str(wrong)]) == 2
    assert "does not match" in capsys.readouterr().err and cached(entry) is None
    # Renamed on the way (as Hugging Face's pytorch_model.bin is): found by its digest.
    brought = tmp_path / "pytorch_model.bin"
    brought.write_bytes(data)
    found = add(brought)
    assert found.entry.name == entry.name and found.path.read_bytes() == data
    assert brought.exists()  # the user's file stays
    assert server.requests == []
    assert main(["weights", "path", entry.name]) == 0
    assert capsys.readouterr().out.strip() == str(found.path)


# ----------------------------------------------------------------------------- strict loading
def test_wrong_key_layout_lists_missing_and_unexpected_keys(server, monkeypatch):
    state = {f"backbone.body.{k}": v for k, v in tiny_resnet18_state().items()}  # another library's layout
    entry = make_entry(server, torch_bytes(state))
    use_catalogue(monkeypatch, entry)
    fetch(entry, **FAST)
    encoder = create_encoder("resnet18", 3, width=8)
    before = encoder.conv1.weight.detach().clone()
    with pytest.raises(WeightsError) as info:
        load_into_encoder(encoder, entry)
    message = str(info.value)
    n_keys = len([k for k in encoder.state_dict() if not k.endswith("num_batches_tracked")])
    assert f"{n_keys} missing: conv1.weight" in message
    assert "unexpected: backbone.body.conv1.weight" in message
    assert torch.equal(encoder.conv1.weight, before)  # nothing half loaded


def test_shape_mismatch_is_listed_with_both_shapes(server, monkeypatch):
    entry = make_entry(server, torch_bytes(tiny_resnet18_state(width=16)))
    use_catalogue(monkeypatch, entry)
    fetch(entry, **FAST)
    with pytest.raises(WeightsError, match=r"with another shape: conv1.weight file \(16, 3, 7, 7\) vs encoder "
                                           r"\(8, 3, 7, 7\)"):
        load_into_encoder(create_encoder("resnet18", 3, width=8), entry)
    # Not strict: nothing fits, nothing is loaded, and the report says so.
    _, report = load_into_encoder(create_encoder("resnet18", 3, width=8), entry, strict=False)
    assert report.loaded == 0 and len(report.mismatched) > 0


@pytest.mark.parametrize("payload", [b"<html>proxy login page</html>" * 50, "dict-of-ints"])
def test_a_file_that_is_not_weights(server, monkeypatch, payload):
    data = torch_bytes({"epoch": 3, "lr": 0.1}) if payload == "dict-of-ints" else payload
    entry = make_entry(server, data)
    use_catalogue(monkeypatch, entry)
    fetch(entry, **FAST)  # its digest is what the (test) catalogue says: the bytes arrive intact
    with pytest.raises(WeightsError, match="not a weights file"):
        load_into_encoder(create_encoder("resnet18", 3, width=8), entry)


def test_grayscale_model_adapts_the_first_conv(server, monkeypatch):
    state = tiny_resnet18_state()
    entry = make_entry(server, torch_bytes(state))
    use_catalogue(monkeypatch, entry)
    fetch(entry, **FAST)
    encoder = create_encoder("resnet18", 1, width=8)
    load_into_encoder(encoder, entry)
    assert torch.allclose(encoder.conv1.weight, state["conv1.weight"].mean(dim=1, keepdim=True))


# ----------------------------------------------------------------------------- recipes and checkpoints
def recipe(root: str, **model) -> "Config":
    from pixelwise.training.config import validate_config

    return validate_config({
        "data": {"root": root, "crop_size": 32, "batch_size": 4, "val_batch_size": 2, "test_split": None},
        "model": {"name": "unet_resnet", "kwargs": {"encoder": "resnet18", "width": 8,
                                                    "decoder_channels": [16, 8, 8, 8, 8]}, **model},
        "train": {"epochs": 1, "max_steps_per_epoch": 1, "amp": "off", "channels_last": False},
    })


def test_recipe_fails_before_any_work_with_the_fetch_command(monkeypatch, tmp_path, server):
    entry = make_entry(server, torch_bytes(tiny_resnet18_state()))
    use_catalogue(monkeypatch, entry, make_entry(server, b"vgg", name="vgg16.imagenet", encoder="vgg16"))
    from pixelwise.training.trainer import Trainer

    # The data folder does not exist either: the weights error must come first.
    with pytest.raises(WeightsError) as info:
        Trainer(recipe(str(tmp_path / "no_such_data"), encoder_weights="imagenet"), tmp_path / "run", verbose=False)
    assert "pixelwise weights fetch resnet18.imagenet" in str(info.value)
    assert not (tmp_path / "run").exists()
    with pytest.raises(WeightsError, match="not a catalogue name or tag"):
        Trainer(recipe("synthetic:shapes?n=8&size=32", encoder_weights="instagram"), tmp_path / "run")
    with pytest.raises(WeightsError, match="are for encoder 'vgg16', but the model uses 'resnet18'"):
        Trainer(recipe("synthetic:shapes?n=8&size=32", encoder_weights="vgg16.imagenet"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_recipe_key_in_kwargs_is_pointed_to_its_place():
    from pixelwise.errors import ConfigError

    with pytest.raises(ConfigError, match="write model.encoder_weights: imagenet"):
        recipe("synthetic:shapes", kwargs={"encoder": "resnet18", "encoder_weights": "imagenet"})


def test_trained_checkpoint_records_the_weights_and_reloads_without_them(server, monkeypatch, tmp_path, home):
    from pixelwise.checkpoint import CheckpointMeta, build_model, load_checkpoint, load_safetensors
    from pixelwise.training.trainer import Trainer

    state = tiny_resnet18_state()
    entry = make_entry(server, torch_bytes(state))
    use_catalogue(monkeypatch, entry)
    fetch(entry, **FAST)
    trainer = Trainer(recipe("synthetic:shapes?n=8&n_val=2&size=32", encoder_weights="imagenet"), tmp_path / "run",
                      verbose=False)
    assert torch.equal(trainer.model.encoder.conv1.weight.detach(), state["conv1.weight"])
    assert trainer.data.mean == list(entry.mean) and trainer.data.std == list(entry.std)  # the weights' normalisation
    trainer.fit()
    shutil.rmtree(home)  # the cache is gone: the trained run must not need it
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["pretrained"]["name"] == "resnet18.imagenet"
    assert ckpt["pretrained"]["sha256"] == entry.digest
    assert ckpt["pretrained"]["licence"] == "test licence"
    assert ckpt["preprocess"]["mean"] == list(entry.mean)
    assert "encoder_weights" not in ckpt["model"]["kwargs"]
    meta = CheckpointMeta.from_dict(ckpt)
    assert meta.pretrained["sha256"] == entry.digest and CheckpointMeta.from_dict(meta.to_dict()) == meta
    model = build_model(ckpt)
    assert torch.equal(model.state_dict()["encoder.conv1.weight"], ckpt["state_dict"]["encoder.conv1.weight"])
    assert load_safetensors(tmp_path / "run" / "model.safetensors")["pretrained"]["name"] == "resnet18.imagenet"


def test_checkpoint_with_encoder_weights_in_kwargs_rebuilds_without_the_file(tmp_path):
    """A model built with encoder_weights (a path or a catalogue name) and saved must reload
    after that file is gone: the state dict replaces the starting weights."""
    from pixelwise.checkpoint import build_model
    from pixelwise.models import create_model
    from pixelwise.tasks import Task

    weights = tmp_path / "r18.pth"
    torch.save(tiny_resnet18_state(), weights)
    kwargs = {"num_classes": 2, "encoder": "resnet18", "width": 8, "encoder_weights": str(weights)}
    model = create_model("unet_resnet", **kwargs)
    weights.unlink()
    rebuilt = build_model({"model": {"name": "unet_resnet", "kwargs": kwargs}, "task": Task("multiclass", 2).to_dict(),
                           "state_dict": model.state_dict()})
    assert torch.equal(rebuilt.state_dict()["encoder.conv1.weight"], model.state_dict()["encoder.conv1.weight"])


def test_list_and_verify_commands(server, monkeypatch, capsys):
    entry = make_entry(server, torch_bytes(tiny_resnet18_state()))
    use_catalogue(monkeypatch, entry)
    assert main(["weights", "list"]) == 0
    assert "resnet18.imagenet" in capsys.readouterr().out
    assert main(["weights", "verify"]) == 0
    assert "no weights in the cache" in capsys.readouterr().out
    assert main(["weights", "path", entry.name]) == 2
    assert "pixelwise weights fetch resnet18.imagenet" in capsys.readouterr().err
    fetch(entry, **FAST)
    assert main(["weights", "verify"]) == 0
    assert "resnet18.imagenet: ok" in capsys.readouterr().out
    rows = json.loads((main(["weights", "list", "--json"]), capsys.readouterr().out)[1])
    assert rows[0]["cached"] and rows[0]["pinned_sha256"] == entry.digest


@pytest.mark.slow  # importing transformers alone takes tens of seconds on 2 busy cores
def test_mit_mapping_turns_hugging_face_classification_files_into_encoder_keys():
    """nvidia/mit-* files are SegformerForImageClassification state dicts; transformers (an
    optional oracle) builds one with random weights, and the catalogue's MiT rules must leave
    exactly the encoder's keys: the project's MiT encoder when present, else transformers'
    own encoder names."""
    transformers = pytest.importorskip("transformers")
    from pixelwise.weights.load import compare, map_keys

    config = transformers.SegformerConfig()  # the B0 sizes
    hf = transformers.SegformerForImageClassification(config).state_dict()
    assert "classifier.weight" in hf and "segformer.encoder.patch_embeddings.0.proj.weight" in hf
    entry = cat.get_weights("mit_b0.imagenet")
    mapped = map_keys(hf, entry)
    try:
        from pixelwise.models.encoders.mit import MIT_VARIANTS, MiTEncoder
    except ImportError:
        target = {k[len("encoder."):]: v for k, v in transformers.SegformerModel(config).state_dict().items()}
    else:
        target = MiTEncoder(MIT_VARIANTS["b0"]).state_dict()
    report = compare(mapped, target)
    assert report.ok, report.describe()


def test_mit_weights_load_strictly_into_segformer(server, monkeypatch):
    """A file in nvidia/mit-b0's layout (SegformerForImageClassification: `segformer.encoder.*`
    plus a classifier) through the real catalogue entry's rules into the segformer model."""
    from pixelwise.models.encoders.mit import MIT_VARIANTS, MiTEncoder
    from pixelwise.weights.recipe import encoder_of

    torch.manual_seed(0)
    source = MiTEncoder(MIT_VARIANTS["b0"]).state_dict()
    state = {f"segformer.encoder.{k}": v for k, v in source.items()}
    state["classifier.weight"], state["classifier.bias"] = torch.randn(1000, 256), torch.randn(1000)
    data = torch_bytes(state)
    served = make_entry(server, data, name="mit_b0.imagenet", encoder="mit_b0", commercial_use=False)
    entry = replace(cat.get_weights("mit_b0.imagenet"), urls=served.urls, file_name=served.file_name,
                    digest=served.digest, size_bytes=len(data), approx_bytes=None)
    use_catalogue(monkeypatch, entry)
    fetch(entry, accept_licence=True, **FAST)
    assert encoder_of("segformer", {"variant": "b0"}) == "mit_b0"
    model = create_model("segformer", num_classes=2, variant="b0", decoder_channels=32)
    _, report = load_pretrained(model, "imagenet")
    assert report.ok and report.loaded == len(source)
    for key, value in source.items():
        assert torch.equal(model.encoder.state_dict()[key], value), key
    with pytest.raises(WeightsError, match="for encoder 'mit_b0', but the model uses 'mit_b1'"):
        load_pretrained(create_model("segformer", num_classes=2, variant="b1", decoder_channels=32),
                        "mit_b0.imagenet")
