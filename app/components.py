"""The raw values the Generate events' inputs hand to ``app.inputs``, turned into local files.

The Generate events run with ``preprocess=False`` (``app.ui.connect``), Gradio's public switch for "give the
handler the request's values as sent": the stock components would otherwise coerce or decode before the app
sees anything (``Textbox`` turns a list into its ``str()``, ``Number``/``Slider`` round 3.7 to 4 and floats
lose integers above 2^53, ``Dropdown`` and the range checks fail with messages that do not name the field,
and ``Image``/``ImageEditor`` decode the whole upload with Pillow, a 20000x20000 PNG or a text file renamed
.png, before any check can run). So a file arrives as Gradio's FileData (a dict whose ``path`` is already in
Gradio's upload cache), an editor value as a dict of those, and ``app.inputs`` validates everything with
messages a person can act on, reading image headers before decoding. This module only finds the local file
of such a value, without decoding it.
"""
from __future__ import annotations

import base64
import binascii
import os
import tempfile
import uuid
from pathlib import Path

from lumiere.errors import InputError

MAX_DATA_URL_BYTES = 50 * 1024 * 1024  # the same cap as a file upload (app.MAX_FILE_SIZE)


def cache_dir() -> Path:
    """Where decoded data URLs are written: the app's Gradio cache (``app.ui.configure_cache_dir``)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()) / "lumiere-data-urls"


def data_url_to_file(url: str) -> str:
    """A ``data:image/...;base64,`` payload (what some API clients send) -> a file path, size-capped."""
    header, _, data = url.partition(",")
    if ";base64" not in header or len(data) > MAX_DATA_URL_BYTES * 4 // 3 + 4:
        raise InputError("The image data URL is not base64 or is larger than 50 MB: upload the file instead.")
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise InputError("The image data URL is not valid base64: upload the file instead.") from None
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}.img"
    path.write_bytes(raw)
    return str(path)


def local_path(value):
    """The local path a raw file value names: a FileData dict's ``path`` (its ``url`` when that is a data URL;
    a video's ``{"video": FileData}`` too), a path string as it is; anything else unchanged (for the caller to
    refuse with a message that names the field)."""
    if isinstance(value, dict):
        if isinstance(value.get("video"), dict):
            value = value["video"]
        url = value.get("url")
        if isinstance(url, str) and url.startswith("data:"):
            return data_url_to_file(url)
        return value.get("path")
    return value
