"""Image decoding and encoding with the conventions of the InsightFace tools.

Decoded images are ``numpy.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``, **BGR**
channel order (what ``cv2.imread`` and InsightFace's detectors use), with the EXIF
orientation applied, as ``cv2.imread(path, cv2.IMREAD_COLOR)`` does.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facekit.errors import SampleRejected

# facekit refuses images over Pillow's pixel limit itself, naming the file (_decode_pil,
# facerec.image_hw); Pillow's warning between 1x and 2x its limit would only repeat that on
# stderr. Set once, at import: a catch_warnings() around each call is not thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Reasons a file is rejected before any face work (stable tokens for the rejects file).
EMPTY_FILE = "empty_file"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
UNREADABLE = "unreadable"

TOO_LARGE = "too_large"

#: Default bound on the size of one input file (bytes): 64 MiB, far above any photo a face
#: dataset holds; a source may set its own (the ``folders`` source's ``max_file_mb``).
MAX_FILE_BYTES = 64 << 20

# read-only, never blocking on open (a FIFO without writer, a device), no controlling
# terminal, no newline translation on Windows
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def file_kind(mode: int) -> str:
    """Name of the file type in an ``st_mode`` ("regular file", "FIFO", "folder", ...)."""
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return name
    return f"special file (mode {mode:o})"


def os_error_detail(e: OSError) -> str:
    """One-line description of an OS error met opening or reading an input file."""
    if e.errno == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    return f"{type(e).__name__}: {e.strerror or e}"


def _open_regular(path, max_bytes: int) -> tuple[int, int]:
    """``(descriptor, size)`` of regular file ``path`` opened non-blocking, its type and
    size checked on the descriptor (:func:`read_file`); the caller closes it. Raises
    SampleRejected (``unreadable``, ``too_large``)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        raise SampleRejected(UNREADABLE, os_error_detail(e)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SampleRejected(UNREADABLE, f"not a regular file: {file_kind(st.st_mode)}")
        if st.st_size > max_bytes:
            raise SampleRejected(TOO_LARGE, f"{st.st_size} bytes > limit {max_bytes}")
    except OSError as e:
        os.close(fd)
        raise SampleRejected(UNREADABLE, os_error_detail(e)) from None
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def read_file(path: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a whole regular file of at most ``max_bytes`` bytes; never blocks.

    The file is opened non-blocking (a FIFO without a writer or a device does not block
    the open) and its type is checked on the opened descriptor (``fstat``, after symbolic
    links were followed), so a path swapped for a FIFO or a link to ``/dev/zero`` after a
    source listed it is refused too. A regular file is read with one ``os.read`` of its
    size (plus one byte to see the end), as ``cat`` reads: no more than ``max_bytes + 1``
    bytes are ever held, even if the file grows while it is read.

    Returns:
        the file's bytes.
    Raises:
        SampleRejected: ``unreadable`` (an OS error: missing, permission denied, symbolic
            link loop, ...; or not a regular file: folder, FIFO, device, socket),
            ``too_large`` (more than ``max_bytes`` bytes).
    """
    fd, size = _open_regular(path, max_bytes)
    try:
        data = os.read(fd, size + 1)
        if len(data) != size:  # the file changed since fstat (or a short read): read on, bounded
            chunks, total = [data], len(data)
            while total <= max_bytes:
                chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            if total > max_bytes:
                raise SampleRejected(TOO_LARGE, f"grew past the limit of {max_bytes} bytes while read")
            data = b"".join(chunks)
    except OSError as e:
        raise SampleRejected(UNREADABLE, os_error_detail(e)) from None
    finally:
        os.close(fd)
    return data


#: bytes of a file's start that :func:`image_format` looks at (its longest signature needs 18)
SNIFF_BYTES = 32


def read_head(path: str, max_bytes: int = MAX_FILE_BYTES, n: int = SNIFF_BYTES) -> bytes:
    """The first ``n`` bytes (fewer if the file is shorter) of regular file ``path``, with
    :func:`read_file`'s checks (opened non-blocking, type and size checked on the opened
    descriptor): one bounded read, never the whole file.

    Raises:
        SampleRejected: ``unreadable``, ``too_large`` (as :func:`read_file`).
    """
    fd, _ = _open_regular(path, max_bytes)
    try:
        return os.read(fd, n)
    except OSError as e:
        raise SampleRejected(UNREADABLE, os_error_detail(e)) from None
    finally:
        os.close(fd)


_WHITESPACE = b" \t\r\n\v\f"


def image_format(head: bytes) -> str | None:
    """The image format whose signature starts ``head`` (a file's first
    :data:`SNIFF_BYTES` bytes), among those :func:`decode_image` decodes: ``"JPEG"``,
    ``"PNG"``, ``"GIF"`` (its first frame is decoded), ``"BMP"``, ``"WEBP"``, ``"TIFF"``
    (BigTIFF too), ``"PPM"`` (PBM, PGM, PPM: ``P1`` to ``P6``), ``"JPEG2000"`` (JP2 file or
    bare codestream); None for anything else (text, ``Thumbs.db``, ``.DS_Store``, ...).
    Looks at signatures only: whether the rest of the file decodes is the decoder's call."""
    b = head[:16]
    if b[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if b[:8] == _PNG_SIGNATURE:
        return "PNG"
    if b[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if b[:2] == b"BM":  # two letters a text may start with: the info header size must be known too
        return "BMP" if len(head) >= 18 and struct.unpack_from("<I", head, 14)[0] in _BMP_DIB_SIZES else None
    if b[:4] == b"RIFF" and b[8:12] == b"WEBP" and b[12:16] in (b"VP8 ", b"VP8L", b"VP8X"):
        return "WEBP"
    if b[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if b[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or b[:4] == b"\xff\x4f\xff\x51":
        return "JPEG2000"
    if len(b) >= 4 and b[0:1] == b"P" and b[1:2] in b"123456" and b[2] in _WHITESPACE:
        # netpbm: the magic number, whitespace, then the width or a comment
        rest = b[3:].lstrip(_WHITESPACE)
        return "PPM" if not rest or rest[:1] == b"#" or rest[:1].isdigit() else None
    return None


# ---- cheap header checks for bytes that pass through undecoded

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# JPEG start-of-frame markers (every SOFn but DHT C4, JPG C8 and DAC CC)
_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_BMP_DIB_SIZES = frozenset((12, 40, 52, 56, 64, 108, 124))
# formats OpenCV (mxnet's and insightface's decoder) reads besides JPEG, PNG and BMP:
# accepted on Pillow's header parse alone
_OTHER_DECODABLE = frozenset(("TIFF", "WEBP", "JPEG2000", "PPM"))


_JPEG_MARKER = struct.Struct(">BBH").unpack_from  # 0xFF, marker, segment length
_JPEG_FRAME = struct.Struct(">HHB").unpack_from  # height, width, components


def _check_jpeg(data: bytes) -> None:
    # walked segment by segment (by their lengths, so an EXIF thumbnail's markers are
    # skipped); about 0.5 us for a camera or OpenCV JPEG, as it stops at the frame header
    n = len(data)
    i = 2
    frame = False
    while i + 4 <= n:
        ff, m, seg = _JPEG_MARKER(data, i)
        if ff != 0xFF:
            raise SampleRejected(CORRUPT, f"JPEG: no marker at byte {i}")
        if 0xDB <= m < 0xFF and seg >= 2:  # DQT, DRI, APPn, COM, ...: skip by length
            i += 2 + seg
            continue
        if m in _JPEG_SOF:
            if seg < 8:
                raise SampleRejected(CORRUPT, f"JPEG: frame header of {seg} bytes at byte {i}")
            if i + 2 + seg > n:
                raise SampleRejected(TRUNCATED, f"JPEG data ends inside the frame header (byte {n})")
            h, w, components = _JPEG_FRAME(data, i + 5)
            if not (h and w and components):
                raise SampleRejected(CORRUPT, f"JPEG frame header: {w}x{h}, {components} components")
            frame = True
            if data.endswith(b"\xff\xd9"):  # the common case: frame header and end of image
                return
        elif m == 0xDA:  # start of scan: the entropy-coded data follows
            if not frame:
                raise SampleRejected(CORRUPT, "JPEG: scan before any frame header")
            # a 0xFF byte in entropy-coded data is followed by 0x00 or a restart marker, so
            # FF D9 after the first scan is the end-of-image marker (bytes may trail it)
            if data.rfind(b"\xff\xd9", i + 2 + seg) < 0:
                raise SampleRejected(TRUNCATED, f"JPEG data ends before its end-of-image marker ({n} bytes)")
            return
        elif m == 0xFF:  # fill byte
            i += 1
            continue
        elif 0xD0 <= m <= 0xD7 or m == 0x01:  # markers without a length
            i += 2
            continue
        elif m == 0xD8 or m == 0xD9:
            raise SampleRejected(CORRUPT, f"JPEG: marker FF{m:02X} before the image data (byte {i})")
        if seg < 2:
            raise SampleRejected(CORRUPT, f"JPEG: segment length {seg} at byte {i}")
        i += 2 + seg
    raise SampleRejected(TRUNCATED, f"JPEG data ends inside its headers (byte {n})")


def _check_png(data: bytes) -> None:
    n = len(data)
    if n < 33:
        raise SampleRejected(TRUNCATED, f"PNG data ends inside its header ({n} bytes)")
    if data[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise SampleRejected(CORRUPT, "PNG: the first chunk is not IHDR")
    w, h = struct.unpack_from(">II", data, 16)
    if not (w and h):
        raise SampleRejected(CORRUPT, f"PNG header: {w}x{h}")
    if not data.endswith(_PNG_IEND):  # else a whole IEND chunk (length 0, type, CRC), bytes may trail
        end = data.rfind(b"\x00\x00\x00\x00IEND", 33)
        if end < 0 or end + 12 > n:
            raise SampleRejected(TRUNCATED, f"PNG data ends before the end of its IEND chunk ({n} bytes)")


def _check_bmp(data: bytes) -> None:
    n = len(data)
    if n < 26:
        raise SampleRejected(TRUNCATED, f"BMP data ends inside its header ({n} bytes)")
    size, _, offset, dib = struct.unpack_from("<IIII", data, 2)
    if dib not in _BMP_DIB_SIZES:  # what Pillow says too: not a BMP it knows
        raise SampleRejected(NOT_AN_IMAGE, f"BMP: info header size {dib} is none of {sorted(_BMP_DIB_SIZES)}")
    if n < 14 + dib:
        raise SampleRejected(TRUNCATED, f"BMP data ends inside its info header ({n} bytes)")
    if dib == 12:
        w, h, _, bpp = struct.unpack_from("<HHHH", data, 18)
        compression = 0
    else:
        w, h, _, bpp, compression = struct.unpack_from("<iiHHI", data, 18)
    if w <= 0 or h == 0 or bpp not in (1, 2, 4, 8, 16, 24, 32):
        raise SampleRejected(CORRUPT, f"BMP header: {w}x{h}, {bpp} bits per pixel")
    # uncompressed: rows of bpp * w bits padded to 4 bytes
    need = offset + ((bpp * w + 31) // 32) * 4 * abs(h) if compression in (0, 3) else offset + 1
    if size > n or need > n:
        raise SampleRejected(
            TRUNCATED, f"BMP data ends early: {n} bytes, header says {size}, pixels need up to byte {need}"
        )


def check_image_header(data: bytes) -> None:
    """Check, without decoding, that ``data`` looks like a complete image file that
    OpenCV (what mxnet's ``imdecode`` and the InsightFace loaders use) decodes.

    For bytes that pass through undecoded (packing already aligned crops): costs a few
    microseconds, not a decode. JPEG: start-of-image, a frame header with a non-zero size
    (segments walked by their lengths, so an EXIF thumbnail does not count), and an
    end-of-image marker after the first scan (at the very end, or followed by trailing
    bytes). PNG: signature, IHDR with a non-zero size, an IEND chunk. BMP: a known
    info-header size, non-zero size, the declared file size and pixel offset within the
    data. TIFF, WebP, JPEG 2000 and PPM/PGM: Pillow recognises the header (not checked
    further). Anything else (text, GIF, ...) is refused.

    Raises:
        SampleRejected: ``empty_file``, ``not_an_image``, ``truncated``, ``corrupt``
            (the reasons :func:`decode_image` gives).
    """
    head = data[:3]
    if head == b"\xff\xd8\xff":
        return _check_jpeg(data)
    if not data:
        raise SampleRejected(EMPTY_FILE, "file has 0 bytes")
    if head == b"\x89PN":
        if data[:8] == _PNG_SIGNATURE:
            return _check_png(data)
    elif head[:2] == b"BM":
        return _check_bmp(data)
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
    except Exception:  # any parser failure on hostile bytes: not an image we recognise
        raise SampleRejected(NOT_AN_IMAGE, "no image format recognised in the bytes") from None
    if fmt not in _OTHER_DECODABLE:
        raise SampleRejected(NOT_AN_IMAGE, f"{fmt} image: OpenCV (mxnet, insightface) does not decode it")


_EXIF_HEAD = b"Exif\x00\x00"


def jpeg_orientation(data: bytes) -> int:
    """EXIF orientation (1-8; 1 when absent or unreadable) of JPEG bytes, from the first
    APP1 ``Exif`` segment's IFD0 tag 0x0112, as Pillow's ``ImageOps.exif_transpose`` reads
    it. Walks the segments before the first scan only (microseconds)."""
    n, i = len(data), 2
    while i + 4 <= n:
        ff, m, seg = _JPEG_MARKER(data, i)
        if ff != 0xFF or m == 0xDA or m == 0xD9:
            return 1
        if m == 0xFF:
            i += 1
            continue
        if 0xD0 <= m <= 0xD7 or m == 0x01:
            i += 2
            continue
        if m == 0xE1 and data[i + 4 : i + 10] == _EXIF_HEAD:
            t = i + 10  # the TIFF header
            end = min(n, i + 2 + seg)
            try:
                bo = {b"II": "<", b"MM": ">"}[data[t : t + 2]]
                (ifd,) = struct.unpack_from(bo + "I", data, t + 4)
                (count,) = struct.unpack_from(bo + "H", data, t + ifd)
                for k in range(count):
                    e = t + ifd + 2 + 12 * k
                    if e + 12 > end:
                        break
                    tag, typ = struct.unpack_from(bo + "HH", data, e)
                    if tag == 0x0112:
                        if typ == 3:  # SHORT
                            (v,) = struct.unpack_from(bo + "H", data, e + 8)
                        elif typ == 4:  # LONG
                            (v,) = struct.unpack_from(bo + "I", data, e + 8)
                        else:
                            return 1
                        return v if 1 <= v <= 8 else 1
            except (KeyError, struct.error):
                pass
            return 1
        if seg < 2:
            return 1
        i += 2 + seg
    return 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """``image`` (``(H, W, C)``) turned upright for an EXIF ``orientation`` (1-8), as
    Pillow's ``ImageOps.exif_transpose`` does; one contiguous copy when not 1."""
    if orientation == 1:
        return image
    t = image.transpose(1, 0, 2)
    view = {
        2: image[:, ::-1],  # mirror left-right
        3: image[::-1, ::-1],  # rotate 180
        4: image[::-1],  # mirror top-bottom
        5: t,  # transpose
        6: t[:, ::-1],  # rotate 90 clockwise
        7: t[::-1, ::-1],  # transverse
        8: t[::-1],  # rotate 90 counter-clockwise
    }.get(orientation)
    return image if view is None else np.ascontiguousarray(view)


def _decode_jpeg_fast(data: bytes):
    """libjpeg-turbo (``simplejpeg``, strict) decode to BGR, EXIF orientation applied;
    None where Pillow must decide (CMYK/YCCK, a libjpeg warning or error, a huge image)."""
    try:
        import simplejpeg
    except ImportError:  # pragma: no cover - a dependency; Pillow decodes the same pixels
        return None
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "Gray", "RGB") or h * w > Image.MAX_IMAGE_PIXELS:
            return None
        # ISLOW DCT and fancy upsampling: the pixels of cv2.imread and Pillow
        bgr = simplejpeg.decode_jpeg(data, "BGR", fastdct=False, fastupsample=False, strict=True)
    except Exception:  # any libjpeg complaint: Pillow gives the reject reason (or decodes it)
        return None
    return apply_orientation(bgr, jpeg_orientation(data))


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP, ... anything Pillow reads).

    Grayscale, palette, RGBA (alpha dropped, as ``cv2.imread``), CMYK (including Adobe's
    inverted CMYK JPEGs) and 16-bit inputs become 3-channel 8-bit; EXIF orientation is
    applied.

    JPEG (YCbCr, grayscale or RGB) is decoded by libjpeg-turbo straight into BGR
    (``simplejpeg``, strict: any libjpeg warning sends the file to Pillow), the EXIF
    orientation applied with one copy only when it is not 1: the same pixels as
    ``cv2.imread`` and the Pillow path, about twice as fast as the latter. Everything else
    (CMYK JPEG, PNG, BMP, TIFF, ...) and every JPEG libjpeg-turbo complains about goes
    through Pillow, which gives the reject reasons.

    Args:
        data: the encoded file bytes.
    Returns:
        ``(H, W, 3)`` uint8 array, BGR.
    Raises:
        SampleRejected: ``empty_file`` (0 bytes), ``not_an_image`` (no image format
            recognised), ``truncated`` (the data ends before the image is complete),
            ``corrupt`` (the decoder rejects the data).
    """
    if not data:
        raise SampleRejected(EMPTY_FILE, "file has 0 bytes")
    if data[:3] == b"\xff\xd8\xff":
        bgr = _decode_jpeg_fast(data)
        if bgr is not None:
            return bgr
    return _decode_pil(data)


#: DCT scale denominators libjpeg-turbo decodes at exactly (a reduced pixel is a k x k
#: block of full pixels)
REDUCTIONS = (8, 4, 2)


def decode_image_reduced(data: bytes, min_side: int) -> tuple[np.ndarray, int]:
    """Decode at a reduced JPEG DCT scale for a consumer that needs only ``min_side``
    pixels on the longer side (a detector's input size).

    A JPEG (YCbCr, grayscale or RGB; what the fast path of :func:`decode_image` takes) is
    decoded by libjpeg-turbo at ``1/k`` of its size, ``k`` the largest of 8, 4, 2 whose
    decode keeps the longer side at least ``min_side``: the same pixels as
    ``cv2.imread(path, cv2.IMREAD_REDUCED_COLOR_k)`` (tests/test_decode_scaled.py), EXIF
    orientation applied. Reduced pixel ``(x, y)`` is the ``k x k`` block of full pixels
    starting at ``(k x, k y)``: a point at ``p`` in the reduced image's pixel-centre
    coordinates is at ``k (p + 0.5) - 0.5`` in the full image; detections (boxes and
    landmarks in the detectors' ``p / scale`` convention) map back by ``* k``. Everything
    else (small images, other formats, JPEGs libjpeg-turbo complains about) is
    :func:`decode_image`'s full decode, ``k = 1``.

    Not a substitute for the full decode where insightface parity matters: DCT-scaled
    pixels are an area average, not the bilinear ``cv2.resize`` of the full image that
    SCRFD's letterbox feeds the model, so detections move (up to ~6 px in full-image
    pixels on the shared 1000-2500 px photos) and so do the aligned crops
    (``python benchmarks/bench_detect_align.py --reduced``).

    Args:
        data: the encoded file bytes.
        min_side: the longer side the result must keep, in pixels (> 0).
    Returns:
        ``(image, k)``: ``(H', W', 3)`` uint8 BGR, ``H' = ceil(H / k)`` (upright sizes),
        and ``k`` in 1, 2, 4, 8.
    Raises:
        SampleRejected: as :func:`decode_image`.
    """
    if data[:3] == b"\xff\xd8\xff":
        try:
            import simplejpeg

            h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        except Exception:  # not decodable here: decode_image gives the reason
            h = w = 0
            colorspace = None
        if colorspace in ("YCbCr", "Gray", "RGB") and h * w <= Image.MAX_IMAGE_PIXELS:
            for k in REDUCTIONS:
                rh, rw = -(-h // k), -(-w // k)
                if max(rh, rw) < min_side:
                    continue
                try:
                    bgr = simplejpeg.decode_jpeg(
                        data, "BGR", fastdct=False, fastupsample=False, min_height=rh, min_width=rw, strict=True
                    )
                except Exception:  # any libjpeg complaint: the full decode decides
                    break
                if bgr.shape[:2] != (rh, rw):  # pragma: no cover - libjpeg-turbo always has 1/k
                    break
                return apply_orientation(bgr, jpeg_orientation(data)), k
    return decode_image(data), 1


def _decode_pil(data: bytes) -> np.ndarray:
    """:func:`decode_image` by Pillow (every format, the reject reasons)."""
    try:
        # The size decides explicitly, below; the filter set at import keeps Pillow's own
        # warning off stderr (catch_warnings here would swap the process's filter list under
        # the other worker threads)
        img = Image.open(io.BytesIO(data))
        fmt = img.format
        w, h = img.size
        if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
            raise SampleRejected(
                NOT_AN_IMAGE,
                f"refused: image size ({w * h} pixels) exceeds limit of {Image.MAX_IMAGE_PIXELS} pixels, "
                "could be decompression bomb DOS attack.",
            )
        img.load()
    except UnidentifiedImageError:
        raise SampleRejected(NOT_AN_IMAGE, "no image format recognised in the bytes") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SampleRejected(NOT_AN_IMAGE, f"refused: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        kind = f"{fmt} " if "fmt" in locals() and fmt else ""
        reason = TRUNCATED if "truncated" in str(e) or isinstance(e, EOFError) else CORRUPT
        raise SampleRejected(reason, f"{kind}data: {e}") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block must not lose an otherwise good image
        pass
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.uint32)
        if arr.max() > 255:
            arr = arr >> 8
        img = Image.fromarray(arr.astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode != "RGB":
        img = img.convert("RGB")
    rgb = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def encode_jpeg(image_bgr: np.ndarray, quality: int = 95) -> bytes:
    """Encode a BGR ``(H, W, 3)`` uint8 image as baseline JPEG with OpenCV.

    Same call as the InsightFace packing scripts: ``cv2.imencode('.jpg', img,
    [cv2.IMWRITE_JPEG_QUALITY, quality])``.
    """
    import cv2  # imported on first use: a pass-through run never encodes

    ok, buf = cv2.imencode(".jpg", image_bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {image_bgr.shape} as JPEG")
    return buf.tobytes()
