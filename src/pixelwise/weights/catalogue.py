"""The catalogue of public pretrained encoder weights, as one table of data.

Each row names a file, where to get it (the publisher's URL first, then mirrors that
serve the same bytes), the strongest digest its publisher gives and where that digest
comes from, the size, the licence, the input normalisation the weights were trained
with, and how its tensor names map onto the project's encoder (`key_map`).

Digests: Hugging Face's LFS pointer gives the full sha256 of a file. torchvision puts
only the first 8 hex digits of the sha256 in the file name (`resnet18-f37072fd.pth`);
where no full digest was found from a second source, the row keeps that prefix and the
full sha256 is pinned in the cache on first fetch (cache.py), so later uses compare
against all 64 digits.

Sizes: exact bytes where a source gives them (checked after download, and a download
that stops short is resumed); otherwise the size as published (torchvision's
`_file_size` in MiB, Hugging Face's page in MB), shown in `weights list` and used to
refuse a file far off it. The exact size is pinned with the digest on first fetch.
"""

from __future__ import annotations

from dataclasses import dataclass

from pixelwise.errors import WeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TORCHVISION_LICENCE = "BSD-3-Clause (torchvision); trained on ImageNet-1k"
TORCHVISION_LICENCE_URL = "https://github.com/pytorch/vision/blob/main/LICENSE"
MIT_LICENCE = "NVIDIA Source Code License for SegFormer (non-commercial use only)"
MIT_LICENCE_URL = "https://github.com/NVlabs/SegFormer/blob/master/LICENSE"

# Classifier heads the encoders do not have: dropped before strict loading.
TORCHVISION_RESNET_DROP = ("fc.",)
TORCHVISION_CLASSIFIER_DROP = ("classifier.",)
# Hugging Face's SegformerForImageClassification: the encoder sits under
# `segformer.encoder.`; the project's MiT encoder keeps Hugging Face's names below that.
MIT_RENAME = (("segformer.encoder.", ""),)
MIT_DROP = ("classifier.",)


@dataclass(frozen=True)
class WeightsEntry:
    """One published weights file for one encoder."""

    name: str                          # catalogue name: "<encoder>.<tag>", e.g. "resnet34.imagenet"
    encoder: str                       # the project's encoder name (create_encoder)
    tag: str                           # what the weights were trained on: "imagenet"
    file_name: str                     # name in the cache (and in the URL)
    urls: tuple[str, ...]              # publisher first, then mirrors of the same bytes
    digest: str                        # full sha256 (64 hex) or its published prefix
    digest_source: str                 # where the digest comes from, for `weights list --json`
    size_bytes: int | None             # exact, when known
    approx_bytes: int | None           # as published, rounded (torchvision's MiB, Hugging Face's MB)
    licence: str
    licence_url: str
    commercial_use: bool               # False: fetching needs --accept-licence
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    rename: tuple[tuple[str, str], ...] = ()   # (source prefix, target prefix) applied to key names
    drop: tuple[str, ...] = ()                 # key prefixes the encoder has no place for
    notes: str = ""

    @property
    def full_digest(self) -> bool:
        return len(self.digest) == 64

    @property
    def size_hint(self) -> int | None:
        """Exact bytes, else the published approximation, else None."""
        return self.size_bytes if self.size_bytes is not None else self.approx_bytes

    def fetch_command(self) -> str:
        flag = " --accept-licence" if not self.commercial_use else ""
        return f"pixelwise weights fetch {self.name}{flag}"


def _torchvision(encoder: str, file_name: str, file_size_mib: float, drop: tuple[str, ...],
                 sha256: str | None = None, size_bytes: int | None = None, sha256_source: str = "") -> WeightsEntry:
    prefix = file_name.rsplit("-", 1)[1].split(".")[0]
    if sha256 is not None and not sha256.startswith(prefix):
        raise AssertionError(f"{file_name}: full sha256 does not start with the published prefix {prefix}")
    return WeightsEntry(
        name=f"{encoder}.imagenet", encoder=encoder, tag="imagenet", file_name=file_name,
        urls=(f"https://download.pytorch.org/models/{file_name}",),
        digest=sha256 or prefix,
        digest_source=(sha256_source if sha256 else
                       "sha256 prefix in torchvision's file name (torchvision checks it with check_hash=True); "
                       "the full sha256 is pinned on first fetch"),
        size_bytes=size_bytes, approx_bytes=round(file_size_mib * 2**20),
        licence=TORCHVISION_LICENCE, licence_url=TORCHVISION_LICENCE_URL, commercial_use=True,
        drop=drop, notes="torchvision IMAGENET1K_V1",
    )


def _mit(variant: str, revision: str, sha256: str, size_bytes: int | None, approx_mb: float | None) -> WeightsEntry:
    path = f"nvidia/mit-{variant}/resolve/{revision}/pytorch_model.bin"
    return WeightsEntry(
        name=f"mit_{variant}.imagenet", encoder=f"mit_{variant}", tag="imagenet",
        file_name=f"mit_{variant}-{sha256[:8]}.bin",
        # The revision is pinned: a later commit to the repository cannot change the bytes.
        urls=(f"https://huggingface.co/{path}", f"https://hf-mirror.com/{path}"),
        digest=sha256, digest_source=f"Hugging Face LFS pointer of nvidia/mit-{variant} pytorch_model.bin",
        size_bytes=size_bytes, approx_bytes=None if approx_mb is None else round(approx_mb * 1e6),
        licence=MIT_LICENCE, licence_url=MIT_LICENCE_URL, commercial_use=False,
        rename=MIT_RENAME, drop=MIT_DROP, notes=f"Hugging Face nvidia/mit-{variant} at {revision[:7]}",
    )


CATALOGUE: tuple[WeightsEntry, ...] = (
    _torchvision("resnet18", "resnet18-f37072fd.pth", 44.661, TORCHVISION_RESNET_DROP,
                 sha256="f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec", size_bytes=46830571,
                 sha256_source="sha256 recorded by third parties, consistent with torchvision's file-name prefix"),
    _torchvision("resnet34", "resnet34-b627a593.pth", 83.275, TORCHVISION_RESNET_DROP),
    _torchvision("resnet50", "resnet50-0676ba61.pth", 97.781, TORCHVISION_RESNET_DROP,
                 sha256="0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a", size_bytes=102530333,
                 sha256_source="sha256 recorded by third parties, consistent with torchvision's file-name prefix"),
    _torchvision("vgg16", "vgg16-397923af.pth", 527.796, TORCHVISION_CLASSIFIER_DROP),
    _torchvision("vgg16_bn", "vgg16_bn-6c64b313.pth", 527.866, TORCHVISION_CLASSIFIER_DROP),
    _torchvision("mobilenetv3_large", "mobilenet_v3_large-8738ca79.pth", 21.114, TORCHVISION_CLASSIFIER_DROP),
    _mit("b0", "698892efdcedeeb02bce6a40d3f4830e469bbff9",
         "4af8348c2a802bf76115d34797ff5ce1d9f110bb8593c22d9b66d8bd7fa227fc", None, 14.4),  # "14.4 MB" on its page
    _mit("b1", "13ddceec4e8bdf401e7cd7acf5aebc526222518c",
         "980b86b60db37b1b1528086f6c53d253d879e9e09ebe07397b40fd275738a3bf", None, None),  # size not found
    _mit("b2", "3bb39e8739149c3777d0325349b2a6c32c6413db",
         "4500b5665471b593e6757e15bcca5034f433fe3902fe8ec2b7230774a57f264f", 98978917, None),
)


def list_weights() -> list[WeightsEntry]:
    return list(CATALOGUE)


def get_weights(name: str) -> WeightsEntry:
    """The entry called `name` ("resnet34.imagenet"); WeightsError listing the names otherwise."""
    for entry in CATALOGUE:
        if entry.name == name:
            return entry
    raise WeightsError(f"no weights called {name!r} in the catalogue; available: "
                       f"{', '.join(e.name for e in CATALOGUE)} (pixelwise weights list)")


def weights_for_encoder(encoder: str, spec: str) -> WeightsEntry:
    """Resolve a recipe's `encoder_weights` (a tag such as "imagenet" or a catalogue name)
    for the encoder `encoder`; the entry must be made for that encoder."""
    entry = None
    if "." in spec:
        entry = get_weights(spec)
    else:
        entry = next((e for e in CATALOGUE if e.encoder == encoder and e.tag == spec), None)
        if entry is None:
            tags = sorted({e.tag for e in CATALOGUE if e.encoder == encoder})
            offer = f"tags for {encoder}: {', '.join(tags)}" if tags else f"the catalogue has no weights for {encoder}"
            raise WeightsError(f"encoder_weights {spec!r}: no such weights for encoder {encoder!r} ({offer})")
    if entry.encoder != encoder:
        raise WeightsError(f"encoder_weights {spec!r} are for encoder {entry.encoder!r}, "
                           f"but the model uses {encoder!r}")
    return entry


def is_catalogue_reference(spec: str) -> bool:
    """True for "imagenet"-style tags and catalogue names; False for anything else (a file path)."""
    return spec in {e.tag for e in CATALOGUE} or spec in {e.name for e in CATALOGUE}
