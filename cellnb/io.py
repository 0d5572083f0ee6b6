"""Image input/output, normalisation and input validation.

Every public function in cellnb that takes an image runs it through
:func:`check_image` so that a bad input fails early with one message that
names the problem and the fix, instead of a NumPy or TensorFlow traceback
three calls deeper.

Outputs are written atomically: to a temporary file in the destination
folder, then renamed into place, so an interrupted run never leaves a
half-written file that looks complete, and an input file is never
overwritten (see :func:`write_labels`).
"""
from __future__ import annotations

import csv
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

__all__ = [
    "InputError",
    "check_image",
    "check_labels",
    "check_markers",
    "read_image",
    "read_labels",
    "normalize",
    "write_labels",
    "write_image",
    "read_markers",
    "write_markers",
    "MARKER_LAYOUTS",
    "write_table",
    "atomic_path",
    "markdown_table",
    "RunFolder",
]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


class InputError(ValueError):
    """A user-supplied image, file or parameter cannot be used.

    The message always says what is wrong and how to fix it.
    """


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
def check_image(image, name: str = "image", *, allow_channels: bool = True,
                min_size: int = 8) -> np.ndarray:
    """Validate a 2-D (H, W) or channels-last (H, W, C) image.

    Parameters
    ----------
    image : array_like
        Image to check. Integer, unsigned or floating dtype.
    name : str
        How to call the image in error messages (e.g. a file name).
    allow_channels : bool
        Accept (H, W, C) input. If False only (H, W) is accepted.
    min_size : int
        Smallest accepted height and width, in pixels.

    Returns
    -------
    image : ndarray
        The same data as an ndarray (no copy when already one).

    Raises
    ------
    InputError
        For wrong dimensionality, non-numeric or boolean dtype, images too
        small, NaN/inf values, or a constant image.
    """
    arr = np.asarray(image)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)):
        raise InputError(
            f"{name}: dtype {arr.dtype} is not a numeric image; pass an integer "
            "or float array (e.g. read the file with cellnb.io.read_image).")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"{name}: complex images are not supported; pass np.abs(image) "
                         "or the real part.")
    if arr.ndim == 3 and allow_channels:
        if arr.shape[-1] > 16 and arr.shape[0] <= 16:
            raise InputError(
                f"{name}: shape {arr.shape} looks channels-first; cellnb expects "
                "channels last (H, W, C): use np.moveaxis(image, 0, -1).")
    elif arr.ndim != 2:
        want = "(H, W) or (H, W, C)" if allow_channels else "(H, W)"
        raise InputError(
            f"{name}: expected a 2-D image of shape {want}, got shape {arr.shape}; "
            "select one plane/channel first (e.g. image[..., 0]).")
    if arr.shape[0] < min_size or arr.shape[1] < min_size:
        raise InputError(f"{name}: image of shape {arr.shape} is too small; height and "
                         f"width must be at least {min_size} pixels.")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InputError(
                f"{name}: {int(bad.sum())} pixels are NaN or infinite; replace them "
                "(e.g. np.nan_to_num(image, nan=np.nanmedian(image))) before segmenting.")
    flat = arr.reshape(arr.shape[0], arr.shape[1], -1)
    for c in range(flat.shape[-1]):
        ch = flat[..., c]
        if ch.min() == ch.max():
            where = f" channel {c}" if flat.shape[-1] > 1 else ""
            raise InputError(
                f"{name}{where}: the image is constant (all pixels = {ch.flat[0]}); it "
                "holds no signal to segment. Check that the right file/channel was read.")
    return arr


def check_labels(labels, name: str = "labels", shape: Sequence[int] | None = None
                 ) -> np.ndarray:
    """Validate an integer label image (0 = background, 1..N = objects).

    Parameters
    ----------
    labels : array_like, shape (H, W), integer dtype
    name : str
        Name used in error messages.
    shape : tuple of int, optional
        Required (H, W); raises if it differs.

    Returns
    -------
    labels : ndarray
    """
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise InputError(f"{name}: a label image must be 2-D (H, W); got shape {arr.shape}.")
    if arr.dtype == bool:
        raise InputError(f"{name}: got a boolean mask, not a label image; label it first "
                         "with skimage.measure.label(mask).")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) \
                and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise InputError(f"{name}: label images need integer values, got dtype "
                             f"{arr.dtype} with non-integer values.")
    if arr.min() < 0:
        raise InputError(f"{name}: label images cannot hold negative values.")
    if shape is not None and tuple(arr.shape) != tuple(shape[:2]):
        raise InputError(f"{name}: shape {arr.shape} does not match the image shape "
                         f"{tuple(shape[:2])}; use labels of the same field.")
    return arr


def check_markers(markers, shape: Sequence[int] | None = None, name: str = "markers",
                  unique: bool = False) -> np.ndarray:
    """Validate marker positions.

    Parameters
    ----------
    markers : array_like, shape (N, 2)
        (row, col) positions in pixels.
    shape : tuple of int, optional
        Image (H, W); markers must lie inside it.
    name : str
        Name used in error messages.
    unique : bool
        Refuse two markers on the same pixel (after rounding): they would
        make two identical patches competing for one cell.

    Returns
    -------
    markers : ndarray, shape (N, 2), float64
    """
    try:
        arr = np.asarray(markers, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{name}: marker positions must be numbers, an (N, 2) array of "
                         "(row, col).") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"{name}: expected an (N, 2) array of (row, col) positions, got "
                         f"shape {arr.shape}.")
    if len(arr) == 0:
        raise InputError(f"{name}: no markers were given, so there is no cell to segment. "
                         "Check the nucleus image (is it the right channel?) or lower the "
                         "marker threshold.")
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr).all(1))
        raise InputError(f"{name}: {len(bad)} position(s) are NaN or infinite (marker(s) "
                         f"{(bad + 1).tolist()[:5]}); drop those rows.")
    if shape is not None:
        h, w = shape[:2]
        out = (arr[:, 0] < -0.5) | (arr[:, 0] > h - 0.5) | (arr[:, 1] < -0.5) | \
              (arr[:, 1] > w - 0.5)
        if out.any():
            raise InputError(
                f"{name}: {int(out.sum())} of {len(arr)} markers lie outside the image of "
                f"shape ({h}, {w}) (first: marker {int(np.flatnonzero(out)[0]) + 1} at "
                f"{tuple(arr[out][0])}); are (row, col) swapped to (x, y)?")
        arr = np.clip(arr, 0, [h - 1, w - 1])
    if unique:
        rc = np.round(arr).astype(np.int64)
        _, first, counts = np.unique(rc, axis=0, return_index=True, return_counts=True)
        if (counts > 1).any():
            dup = rc[first[counts > 1][0]]
            raise InputError(f"{name}: {int((counts - 1).sum())} marker(s) repeat a position "
                             f"already given (e.g. row {dup[0]}, col {dup[1]}); keep one "
                             "marker per cell.")
    return arr


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------
def _check_declared_size(p: Path, suffix: str) -> None:
    """Refuse a file whose header declares more pixels than memory holds, before reading it.

    A corrupt or hostile header can claim a size that would exhaust memory when
    the pixels are allocated; the header alone says how big the image is.
    Unreadable headers are left to the reader (which raises a clear error).
    """
    from .validate import memory_available
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile
            with tifffile.TiffFile(p) as tif:
                s = tif.series[0]
                nbytes = int(np.prod(s.shape, dtype=np.float64)) * np.dtype(s.dtype).itemsize
                shape = tuple(s.shape)
        else:
            from PIL import Image
            with Image.open(p) as im:
                shape = (im.size[1], im.size[0], len(im.getbands()))
                nbytes = int(np.prod(shape, dtype=np.float64)) * (2 if "16" in im.mode else 1)
    except Exception:
        return
    avail = memory_available()
    if nbytes > avail // 2:
        raise InputError(f"{p}: its header declares an image of shape {shape} "
                         f"({nbytes / 2**30:.1f} GiB), more than half the memory available "
                         f"({avail / 2**30:.1f} GiB); the file is corrupt, or the image must "
                         "be cut into smaller fields first.")


def _read_raw(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF/PNG file into (H, W) or (H, W, C) without checking its values."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found; check the path.")
    suffix = p.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"{p}: unsupported file type {suffix!r}; use one of "
                         f"{', '.join(IMAGE_SUFFIXES)}.")
    _check_declared_size(p, suffix)
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile
            img = tifffile.imread(p)
        else:
            from skimage import io as skio
            img = skio.imread(p)
    except Exception as exc:  # tifffile/imageio raise many types on bad files
        raise InputError(f"{p}: cannot be read as an image ({type(exc).__name__}: {exc}); "
                         "the file may be corrupt or truncated.") from None
    img = np.squeeze(np.asarray(img))
    if img.size == 0:
        raise InputError(f"{p}: the file holds no pixel data; it may be corrupt or truncated.")
    if img.ndim == 3 and img.shape[0] <= 16 and img.shape[-1] > 16:
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and suffix == ".png" and img.shape[-1] in (3, 4):
        rgb = img[..., :3]
        # a grey image saved as RGB(A) PNG: keep one plane
        if np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]):
            img = rgb[..., 0]
        else:
            img = rgb
    if img.ndim not in (2, 3):
        raise InputError(f"{p}: image has shape {img.shape}; cellnb reads single 2-D "
                         "fields, optionally with channels. Save one plane per file.")
    return img


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF or PNG image as (H, W) or channels-last (H, W, C), validated.

    Parameters
    ----------
    path : str or path-like
        ``.tif``/``.tiff`` (via tifffile) or ``.png`` (via scikit-image).

    Returns
    -------
    image : ndarray, shape (H, W) or (H, W, C)
        Native dtype (uint8, uint16, float32, ...). Singleton axes are
        squeezed; a 3-D TIFF stored channels-first (C, H, W) with C <= 16 is
        moved to channels-last.

    Raises
    ------
    InputError
        Missing or unreadable file, unsupported suffix, more than one
        non-channel axis (e.g. a z-stack), or an image that fails
        :func:`check_image` (constant, NaN, wrong dtype...).
    """
    return check_image(_read_raw(path), name=str(path))


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read a label image or mask (0 = background); an empty one is allowed.

    Returns
    -------
    labels : ndarray of int, shape (H, W)

    Raises
    ------
    InputError
        As :func:`read_image`, or when the file is not an integer 2-D image.
    """
    return check_labels(_read_raw(path), name=str(path))


def normalize(image, pmin: float = 1.0, pmax: float = 99.8, clip: bool = False,
              eps: float = 1e-8) -> np.ndarray:
    """Robust percentile normalisation to roughly [0, 1].

    Each channel is scaled independently so that its `pmin` percentile maps
    to 0 and its `pmax` percentile to 1. Percentiles, rather than min/max,
    keep hot pixels and dust from squashing the useful range.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
    pmin, pmax : float
        Percentiles in [0, 100] with ``pmin < pmax``.
    clip : bool
        Clip the result to [0, 1].
    eps : float
        Guard against division by zero.

    Returns
    -------
    out : ndarray, float32, same shape as `image`
    """
    if not (0 <= pmin < pmax <= 100):
        raise InputError(f"normalize: need 0 <= pmin < pmax <= 100, got pmin={pmin}, "
                         f"pmax={pmax}.")
    img = check_image(image).astype(np.float32)
    axes = (0, 1)
    lo = np.percentile(img, pmin, axis=axes, keepdims=True)
    hi = np.percentile(img, pmax, axis=axes, keepdims=True)
    # a channel that is almost constant except for a few hot pixels: fall back to min/max
    flat = hi - lo <= eps
    if np.any(flat):
        lo = np.where(flat, img.min(axis=axes, keepdims=True), lo)
        hi = np.where(flat, img.max(axis=axes, keepdims=True), hi)
    out = (img - lo) / np.maximum(hi - lo, eps)
    if clip:
        out = np.clip(out, 0, 1)
    return out.astype(np.float32)


def read_yaml(path: str | os.PathLike, what: str = "parameter file"):
    """Parse a YAML file; one-line :class:`InputError` for a missing, binary or invalid file."""
    import yaml
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {what} not found.")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a text file; the {what} must be YAML text.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InputError(f"{p}: not valid YAML{where} ({problem}).") from None
    except RecursionError:
        raise InputError(f"{p}: YAML nested too deeply.") from None


# --------------------------------------------------------------------------
# writing (atomic)
# --------------------------------------------------------------------------
@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder; rename it to `path` on success.

    The temporary file is removed if the block raises, so readers only
    ever see a complete file or none.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=dest.suffix or ".tmp",
                               dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the usual permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _refuse_input(dest: Path, protect: Sequence[str | os.PathLike]) -> None:
    for p in protect:
        if p is not None and Path(p).exists() and dest.exists() and \
                Path(p).resolve() == dest.resolve():
            raise InputError(f"{dest}: refusing to overwrite an input file; choose "
                             "another output path.")


def write_labels(path: str | os.PathLike, labels,
                 protect: Sequence[str | os.PathLike] = ()) -> Path:
    """Write a label image as a compressed TIFF, atomically.

    Parameters
    ----------
    path : path-like
        Destination ``.tif``/``.tiff``.
    labels : array_like, shape (H, W), integer
        0 = background. Stored as uint16 when the largest id fits, else uint32.
    protect : sequence of path-like
        Input files that must not be overwritten (raises if `path` is one).

    Returns
    -------
    path : Path
    """
    import tifffile
    dest = Path(path)
    if dest.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"{dest}: label images are written as TIFF; use a .tif name.")
    _refuse_input(dest, protect)
    lab = check_labels(labels)
    dtype = np.uint16 if lab.max() <= np.iinfo(np.uint16).max else np.uint32
    with atomic_path(dest) as tmp:
        tifffile.imwrite(tmp, lab.astype(dtype), compression="zlib")
    return dest


def write_image(path: str | os.PathLike, image, protect: Sequence = ()) -> Path:
    """Write an image (any numeric dtype, (H, W) or (H, W, C)) as TIFF, atomically."""
    import tifffile
    dest = Path(path)
    _refuse_input(dest, protect)
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    with atomic_path(dest) as tmp:
        tifffile.imwrite(tmp, arr, compression="zlib")
    return dest


def _columns(rows: Sequence[dict]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.3f}"
    return str(v)


def markdown_table(rows: Sequence[dict]) -> str:
    """Rows (dicts) as a Markdown table; floats with 3 decimals."""
    cols = _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_table(path: str | os.PathLike, rows: Sequence[dict], markdown: bool = False) -> Path:
    """Write a list of dicts as CSV, atomically (columns in first-seen order).

    With ``markdown=True`` the same table is also written beside it as ``.md``.
    """
    dest = Path(path)
    cols = _columns(rows)
    with atomic_path(dest) as tmp:
        with open(tmp, "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=cols)
            wr.writeheader()
            wr.writerows(rows)
    if markdown:
        with atomic_path(dest.with_suffix(".md")) as tmp:
            tmp.write_text(markdown_table(rows) + "\n")
    return dest


#: the layouts :func:`write_markers` writes: (id column, first id, row column, col column)
MARKER_LAYOUTS = {"cellnb": ("id", 1, "row", "col"), "napari": ("index", 0, "axis-0", "axis-1")}


def write_markers(path: str | os.PathLike, markers, layout: str = "cellnb") -> Path:
    """Write (N, 2) marker positions as CSV, atomically.

    Parameters
    ----------
    path : path-like
        CSV file to write.
    markers : array_like, shape (N, 2)
        (row, col) positions.
    layout : {"cellnb", "napari"}
        ``"cellnb"``: columns ``id,row,col``; marker ``id`` k (1-based)
        becomes label k in the segmentation. ``"napari"``: columns
        ``index,axis-0,axis-1``, what napari opens by drag and drop as a 2-D
        points layer (to correct the markers by hand and save them back with
        *File > Save Selected Layer(s)*). :func:`read_markers` reads both.

    Returns
    -------
    Path
        The file written.
    """
    m = check_markers(markers)
    if layout not in MARKER_LAYOUTS:
        known = " or ".join(f"'{k}' ({','.join((v[0],) + v[2:])})"
                            for k, v in MARKER_LAYOUTS.items())
        raise InputError(f"write_markers: unknown layout {layout!r}; use {known}.")
    key, first, rname, cname = MARKER_LAYOUTS[layout]
    return write_table(path, [{key: i + first, rname: f"{r:.2f}", cname: f"{c:.2f}"}
                              for i, (r, c) in enumerate(m)])


#: accepted marker CSV layouts: (row column, col column, who writes it); names are
#: matched case-insensitively, and any other column is ignored
MARKER_COLUMNS = (("row", "col", "cellnb"), ("y", "x", "y,x columns; Fiji's multi-point "
                  "Measure table (X, Y in pixels)"), ("axis-0", "axis-1", "napari points layer"))


def read_markers(path: str | os.PathLike, shape: Sequence[int] | None = None) -> np.ndarray:
    """Read one point per cell from a CSV file.

    Accepted layouts (column names are matched case-insensitively; extra
    columns are ignored):

    * ``row,col`` — what :func:`write_markers` writes (an ``id`` column too);
    * ``y,x`` — also Fiji's *Analyze > Measure* table of a multi-point
      selection, whose ``X`` and ``Y`` are pixel positions when the image has
      no spatial calibration (*Image > Properties*: pixel width 1);
    * ``axis-0,axis-1`` — napari's *Save selected layer* of a 2-D points layer.

    Parameters
    ----------
    path : path-like
    shape : (int, int), optional
        Image (H, W): markers must lie inside it.

    Returns
    -------
    markers : ndarray, shape (N, 2), float64
        (row, col) positions; marker k (0-based) becomes cell label k + 1.

    Raises
    ------
    InputError
        Missing or unreadable file, no rows, an unknown layout, a value that
        is not a number, two markers on one pixel, or markers outside `shape`.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: marker file not found.")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.DictReader(fh) if any((v or "").strip() for v in
                                                         r.values() if isinstance(v, str))]
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise InputError(f"{p}: not a readable CSV file ({exc}).") from None
    if not rows:
        raise InputError(f"{p}: the marker file holds no rows; no cell to segment.")
    keys = {k.strip().lower(): k for k in rows[0] if k is not None}
    if "axis-2" in keys:
        raise InputError(f"{p}: a napari points layer of 3 or more dimensions (axis-0, axis-1, "
                         "axis-2...); cellnb reads single 2-D fields: save the points of one "
                         "plane from a 2-D layer.")
    for rname, cname, _ in MARKER_COLUMNS:
        if rname in keys and cname in keys:
            rk, ck = keys[rname], keys[cname]
            break
    else:
        known = "; ".join(f"{r},{c} ({who})" for r, c, who in MARKER_COLUMNS)
        raise InputError(f"{p}: no marker columns found in {list(rows[0])}; use one of: "
                         f"{known}.")
    try:
        arr = np.array([[float(r[rk]), float(r[ck])] for r in rows])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{p}: a {rk}/{ck} value is not a number ({exc}).") from None
    return check_markers(arr, shape, name=str(p), unique=True)


class RunFolder:
    """Where each step of a run reads and writes its results.

    One folder per run (``runs/demo`` for ``make demo``)::

        markers/<field>.csv        step 1
        markers/<field>__synthetic.csv, models/nuclei.keras   step 2
        masks/<field>__<chans>.tif step 3
        models/<name>.keras        step 4
        labels/<field>__<cfg>.tif  step 5
        tables/*.csv, *.md         every step
        figures/*.png              every step

    Parameters
    ----------
    root : path-like
        The run folder; created on demand.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _p(self, sub: str, name: str) -> Path:
        p = self.root / sub / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def markers(self, field: str, source: str = "nucleus") -> Path:
        """Markers of `field` from the nucleus image (01) or a synthetic one (02)."""
        return self._p("markers", f"{field}.csv" if source == "nucleus"
                       else f"{field}__{source}.csv")

    def mask(self, field: str, channels: str = "") -> Path:
        """Mask of `field`; `channels` names the cell channels it was made from."""
        return self._p("masks", f"{field}__{channels}.tif" if channels else f"{field}.tif")

    def model(self, name: str) -> Path:
        return self._p("models", f"{name}.keras")

    def labels(self, field: str, config: str = "default") -> Path:
        return self._p("labels", f"{field}__{config}.tif")

    def table(self, name: str) -> Path:
        return self._p("tables", f"{name}.csv")

    def figure(self, name: str) -> Path:
        return self._p("figures", f"{name}.png")

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"
