"""Gradio input components that hand the request's raw value to ``app.inputs`` instead of converting it.

Why: the stock components coerce or decode before the app sees anything. ``Textbox`` turns a list into
its ``str()``, ``Number``/``Slider`` round 3.7 to 4 and floats lose integers above 2^53, ``Dropdown`` and
the range checks fail with messages that do not name the field, and ``Image``/``ImageEditor`` decode
the whole upload with Pillow (a 20000x20000 PNG, a text file renamed .png) before any check can run.
Here preprocessing only passes values (and local file paths) through; ``app.inputs`` validates them
with messages a person can act on, reading image headers before decoding.
"""
from __future__ import annotations

import base64
import binascii
import uuid
from pathlib import Path

import gradio as gr
from gradio import component_meta

MAX_DATA_URL_BYTES = 50 * 1024 * 1024  # the same cap as a file upload (app.MAX_FILE_SIZE)


# Gradio writes a .pyi stub next to the module of every component class it sees defined; these
# subclasses add no events, so the stub would only be clutter in the source tree.
_create_pyi = component_meta.create_or_modify_pyi
component_meta.create_or_modify_pyi = lambda *args, **kwargs: None


class Textbox(gr.Textbox):
    def preprocess(self, payload):
        return payload


class Number(gr.Number):
    def preprocess(self, payload):
        return payload


class Slider(gr.Slider):
    def preprocess(self, payload):
        return payload


class Checkbox(gr.Checkbox):
    def preprocess(self, payload):
        return payload


class Dropdown(gr.Dropdown):
    def preprocess(self, payload):
        return payload


def _data_url_to_file(url: str, cache_dir: str) -> str:
    """A ``data:image/...;base64,`` payload (what some API clients send) -> a file path, size-capped."""
    from app.inputs import InputError

    header, _, data = url.partition(",")
    if ";base64" not in header or len(data) > MAX_DATA_URL_BYTES * 4 // 3 + 4:
        raise InputError("The image data URL is not base64 or is larger than 50 MB: upload the file instead.")
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise InputError("The image data URL is not valid base64: upload the file instead.") from None
    directory = Path(cache_dir) / "lumiere-data-urls"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}.img"
    path.write_bytes(raw)
    return str(path)


def _file_path(file, cache_dir: str) -> str | None:
    """The local path of a FileData / raw bytes / data URL, without decoding it."""
    if file is None:
        return None
    if isinstance(file, (bytes, bytearray, memoryview)):
        if len(file) > MAX_DATA_URL_BYTES:
            from app.inputs import InputError

            raise InputError("The image is larger than 50 MB: upload a smaller file.")
        directory = Path(cache_dir) / "lumiere-data-urls"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{uuid.uuid4().hex}.img"
        path.write_bytes(bytes(file))
        return str(path)
    url = getattr(file, "url", None)
    if isinstance(url, str) and url.startswith("data:"):
        return _data_url_to_file(url, cache_dir)
    return getattr(file, "path", None)


# No __init__ overrides below: Gradio builds a component's config from its __init__ signature.
class Image(gr.Image):
    """An image input whose value is the uploaded file's path (``app.inputs.open_image`` checks and decodes
    it); create it with ``type="filepath", image_mode=None``."""

    def preprocess(self, payload):
        return _file_path(payload, self.GRADIO_CACHE)


class ImageEditor(gr.ImageEditor):
    """An editor whose value holds file paths (background, brushed layers); nothing is decoded here.
    Create it with ``type="filepath"``."""

    def convert_and_format_image(self, file, flatten_on_white: bool = False):
        return _file_path(file, self.GRADIO_CACHE)


component_meta.create_or_modify_pyi = _create_pyi
