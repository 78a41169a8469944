"""A small NumPy reader and writer for the safetensors format (no dependency on the package).

File layout (https://github.com/huggingface/safetensors#format): an unsigned little-endian 64-bit
header length N; N bytes of UTF-8 JSON mapping each tensor name to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets relative to the byte after the header), plus an optional
``"__metadata__"`` str -> str map; then the raw little-endian, C-ordered tensor bytes.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Mapping

import numpy as np

from ._io import atomic_open

__all__ = ["SafetensorsError", "read_safetensors", "write_safetensors", "DTYPES"]

#: safetensors dtype name -> little-endian NumPy dtype. BF16 has no NumPy dtype: it is read as
#: uint16 and widened to float32 exactly (a bfloat16 is the top half of a float32).
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {np.dtype(v).newbyteorder("="): k for k, v in DTYPES.items() if k != "BF16"}

# A header larger than this is a corrupt length field, not a real header (the reference
# implementation uses the same 100 MB bound).
_MAX_HEADER = 100_000_000


class SafetensorsError(ValueError):
    """A safetensors file that is truncated, corrupted or otherwise not readable."""


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read every tensor of ``path``: (name -> native-endian NumPy array in file order, metadata).

    Raises :class:`SafetensorsError` naming the file and the problem for a truncated file, a bad
    header, an unknown dtype, or offsets that do not match the shapes or the file size.
    """
    path = os.fspath(path)

    def bad(msg: str) -> SafetensorsError:
        return SafetensorsError(f"{path}: not a valid safetensors file: {msg}")

    with open(path, "rb") as fh:
        blob = fh.read()
    if len(blob) < 8:
        raise bad(f"{len(blob)} bytes is too short for the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > _MAX_HEADER or 8 + n > len(blob):
        raise bad(f"header length {n} exceeds the file size {len(blob)} (truncated or corrupted)")
    try:
        header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise bad(f"header is not UTF-8 JSON ({err})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise bad("__metadata__ must map strings to strings")
    data = memoryview(blob)[8 + n :]
    out: dict[str, np.ndarray] = {}
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"tensor {name!r}: entry must have exactly dtype, shape and data_offsets; got {info!r}")
        dtype_name, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype_name not in DTYPES:
            raise bad(f"tensor {name!r}: unsupported dtype {dtype_name!r}; supported: {sorted(DTYPES)}")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise bad(f"tensor {name!r}: shape {shape!r} is not a list of non-negative ints")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise bad(f"tensor {name!r}: data_offsets {offsets!r} is not [begin, end] with begin <= end")
        dt = DTYPES[dtype_name]
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise bad(
                f"tensor {name!r}: data_offsets {offsets} span {offsets[1] - offsets[0]} bytes but "
                f"{dtype_name} {shape} needs {nbytes}"
            )
        if offsets[1] > len(data):
            raise bad(
                f"tensor {name!r}: data ends at byte {offsets[1]} but the file holds only {len(data)} "
                f"data bytes (truncated)"
            )
        a = np.frombuffer(data[offsets[0] : offsets[1]], dtype=dt).reshape(shape)
        if dtype_name == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        else:
            a = a.astype(dt.newbyteorder("="), copy=True)
        out[name] = a
        spans.append((offsets[0], offsets[1], name))
    # The format stores the tensors back to back: a gap or an overlap means a damaged header, and
    # bytes after the last tensor a damaged length field or an appended file.
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else f"leaves a gap at byte {position}"
            raise bad(f"tensor {name!r} starts at data byte {begin} and {what}")
        position = end
    if position != len(data):
        raise bad(f"{len(data) - position} bytes after the last tensor (data ends at {position} of {len(data)})")
    return out, dict(metadata)


def write_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` (name -> NumPy array) to ``path`` atomically, in the given order.

    dtypes: float64/32/16, int64/32/16/8, uint8 and bool. ``metadata`` is stored as
    ``__metadata__`` (strings only).
    """
    header: dict[str, object] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    arrays = []
    offset = 0
    for name, value in tensors.items():
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved and cannot name a tensor")
        a = np.asarray(value)
        key = a.dtype.newbyteorder("=")
        if key not in _NAMES:
            raise TypeError(f"tensor {name!r}: dtype {a.dtype} cannot be written; supported: {sorted(_NAMES.values())}")
        dtype_name = _NAMES[key]
        a = np.asarray(a, dtype=DTYPES[dtype_name], order="C")  # ascontiguousarray would make 0-d arrays 1-d
        header[name] = {"dtype": dtype_name, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the reference writer pads the header to 8 bytes
    with atomic_open(path) as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for a in arrays:
            fh.write(a.tobytes())
