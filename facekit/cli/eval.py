"""``facekit eval``: score an ONNX recognition model on verification ``.bin`` files.

The protocol is insightface's ``verification.test`` (see :mod:`facekit.eval.verification`):
image + horizontal flip embeddings summed and L2-normalised, 10-fold accuracy (mean ± std),
TAR@FAR=1e-3, XNorm. Prints a table; ``--json`` writes the numbers (atomically).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from facekit.errors import FacekitError


def embed_bin(embedder, bins: list[bytes], name: str, batch_size: int = 64, flip: bool = True, progress=None):
    """Raw embeddings of every image of a bin, batched, with a progress bar.

    Args:
        embedder: a :class:`facekit.eval.recognition.OnnxEmbedder`. bins: encoded images in pair
            order. name: the bin's name for messages. progress: None (auto), True, False.
    Returns:
        ``(emb, emb_flip)``: ``(2P, D)`` float32 raw outputs (``emb_flip`` None without flip).
    """
    embs, flips = [], []
    with tqdm(
        total=len(bins), desc=Path(name).name, unit="img", disable=(not progress) if progress is not None else None
    ) as bar:
        for i in range(0, len(bins), batch_size):
            chunk = bins[i : i + batch_size]
            e, f = embedder.embed_encoded(chunk, flip, [f"{name}[{i + k}]" for k in range(len(chunk))])
            embs.append(e)
            if f is not None:
                flips.append(f)
            bar.update(len(chunk))
    return np.concatenate(embs), (np.concatenate(flips) if flip else None)


def evaluate_bin(embedder, path, batch_size: int = 64, flip: bool = True, folds: int = 10, progress=None) -> dict:
    """Load a bin safely, embed it and score it. Returns a JSON-ready dict: ``bin`` plus
    the fields of :class:`facekit.eval.verification.VerificationResult`, ``accuracy_caveat``
    (:func:`accuracy_caveat`: what the accuracy of a one-class bin measures, else None) and
    ``seconds``."""
    from facekit.formats.evalbin import load_bin
    from facekit.eval.verification import verify

    t0 = time.perf_counter()
    bins, issame = load_bin(path)
    emb, emb_flip = embed_bin(embedder, bins, str(path), batch_size, flip, progress)
    res = verify(emb, issame, emb_flip, folds=folds)
    return {
        "bin": str(path),
        **res.as_dict(),
        "accuracy_caveat": accuracy_caveat(res.pairs, res.positives),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def accuracy_caveat(pairs: int, positives: int) -> str | None:
    """What the accuracy of a one-class bin measures, or None for a bin with both kinds.

    With positive pairs only, each fold's threshold is fitted on positives alone, so the
    accuracy is only the share of pairs closer than it (no pair could be wrongly accepted);
    with negatives only, the share farther than it. Neither is a verification score."""
    if pairs and positives == pairs:
        return (
            f"all {pairs} pairs positive: accuracy is only the share of pairs closer than a threshold "
            "fitted on positives, not a verification score"
        )
    if pairs and positives == 0:
        return (
            f"all {pairs} pairs negative: accuracy is only the share of pairs farther than a threshold "
            "fitted on negatives, not a verification score"
        )
    return None


def _note(r: dict) -> str:
    """The row's note: the one-class caveat and why TAR@FAR is undefined ("-": none)."""
    notes = [r.get("accuracy_caveat") or accuracy_caveat(r["pairs"], r.get("positives", -1))]
    if r.get("tar") is None:
        notes.append(f"TAR@FAR undefined: {r.get('tar_undefined') or 'not measured'}")
    return "; ".join(n for n in notes if n) or "-"


def _pm_cells(values: list[tuple[float, float] | None], empty: str) -> list[str]:
    """``mean ± std`` cells in percent whose means, ``±`` and stds line up (``empty`` where
    a value is None)."""
    parts = [None if v is None else (f"{100 * v[0]:.2f}", f"{100 * v[1]:.2f}") for v in values]
    wm = max((len(p[0]) for p in parts if p), default=0)
    ws = max((len(p[1]) for p in parts if p), default=0)
    return [empty if p is None else f"{p[0].rjust(wm)} ± {p[1].rjust(ws)}" for p in parts]


#: the columns of :func:`format_table`: header and alignment (``<`` left, ``>`` right)
_COLUMNS = (
    ("bin", "<"),
    ("pairs", ">"),
    ("positives", ">"),
    ("accuracy %", ">"),
    ("TAR@FAR=1e-3 %", ">"),
    ("XNorm", ">"),
    ("seconds", ">"),
    ("note", "<"),
)
_GAP = "  "


def format_table(rows: list[dict]) -> str:
    """The results as a text table, one line per bin, the columns at the same character
    offsets in every line (widths computed from the cells, two spaces between columns):
    pairs, positives, accuracy and TAR@FAR=1e-3 in percent (``mean ± std``, the ``±``
    aligned), XNorm, seconds and a note. A TAR@FAR that cannot be measured (a set without
    negatives or positives) reads ``undefined``, with the reason in the note; a one-class
    bin's note says what its accuracy measures (:func:`accuracy_caveat`)."""
    acc = _pm_cells([(r["accuracy"], r["accuracy_std"]) for r in rows], "-")
    tar = _pm_cells([None if r.get("tar") is None else (r["tar"], r["tar_std"]) for r in rows], "undefined")
    body = [
        [
            Path(r["bin"]).name,
            str(r["pairs"]),
            str(r["positives"]) if r.get("positives") is not None else "-",
            acc[i],
            tar[i],
            f"{r['xnorm']:.3f}" if r.get("xnorm") is not None else "-",
            f"{r['seconds']:.1f}",
            _note(r),
        ]
        for i, r in enumerate(rows)
    ]
    head = [name for name, _ in _COLUMNS]
    widths = [max(len(c[i]) for c in [head, *body]) for i in range(len(head))]

    def line(cells):
        out = _GAP.join(
            c.ljust(w) if align == "<" else c.rjust(w) for c, w, (_, align) in zip(cells, widths, _COLUMNS)
        )
        return out.rstrip()

    rule = _GAP.join("-" * w for w in widths[:-1] + [len(head[-1])])  # the note: free text
    return "\n".join([line(head), rule] + [line(c) for c in body])


def _bin_error(path, e: BaseException) -> str:
    """One line naming the bin: the error's own message when it names it already."""
    msg = " ".join(str(e).split()) or type(e).__name__
    if not isinstance(e, (FacekitError, ValueError, OSError)):
        msg = f"{type(e).__name__}: {msg}"
    return msg if str(path) in msg or str(Path(path)) in msg else f"{path}: {msg}"


@click.command("eval")
@click.argument("bins", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option(
    "-m", "--model", required=True, type=click.Path(dir_okay=False, exists=True), help="ONNX recognition model"
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the results here as JSON")
@click.option("-b", "--batch-size", default=64, show_default=True, type=click.IntRange(1), help="images per batch")
@click.option("--input-size", type=click.IntRange(1), help="model input side in pixels (default: from the model)")
@click.option("--mean", type=float, help="normalisation (x - mean) / std (default: from the model, else 127.5)")
@click.option("--std", type=float, help="normalisation (x - mean) / std (default: from the model, else 127.5)")
@click.option(
    "--color",
    type=click.Choice(["RGB", "BGR"], case_sensitive=False),
    help="channel order (default: from the model, else RGB)",
)
@click.option("--no-flip", is_flag=True, help="do not add the embeddings of the horizontally flipped images")
@click.option("--folds", default=10, show_default=True, type=click.IntRange(1), help="cross-validation folds")
@click.option(
    "--providers",
    default="CPUExecutionProvider",
    show_default=True,
    help="onnxruntime execution providers for the model, comma-separated, in order of preference "
    "(e.g. CUDAExecutionProvider,CPUExecutionProvider)",
)
@click.option(
    "--threads", default=0, show_default=True, type=click.IntRange(0), help="onnxruntime intra-op threads (0: its default)"
)
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def eval_command(
    bins, model, json_path, batch_size, input_size, mean, std, color, no_flip, folds, providers, threads, quiet
):
    """Score an ONNX recognition model on verification .bin files (insightface protocol).

    Prints 10-fold accuracy (mean ± std), TAR at FAR=1e-3 and XNorm per bin. TAR@FAR is
    reported as undefined (JSON null, with the reason) for a bin without negative or
    positive pairs. On such a one-class bin the accuracy only counts the pairs on the
    right side of a threshold fitted on that one class: the row's note (and the JSON's
    accuracy_caveat) says so. A bin that fails does not stop the others: the results of
    those that succeeded are printed (and written), then one error line per failed bin,
    and the exit status is 1.
    """
    from facekit.eval.recognition import OnnxEmbedder
    from facekit.formats.atomic import atomic_write_text
    from facekit.vision.onnxdet import check_providers

    try:  # a bad option: one line, exit 2 (before the model is read)
        providers = check_providers([p.strip() for p in providers.split(",") if p.strip()])
    except ValueError as e:
        click.echo(f"error: --providers: {str(e).removeprefix('providers: ')}", err=True)
        sys.exit(2)
    try:
        emb = OnnxEmbedder(model, input_size, mean, std, color, providers=providers, threads=threads)
    except (FacekitError, ValueError, OSError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    rows, errors = [], []
    for b in bins:
        try:
            rows.append(evaluate_bin(emb, b, batch_size, not no_flip, folds, progress=False if quiet else None))
        except Exception as e:  # noqa: BLE001 - one bad bin must not hide the others' results
            errors.append({"bin": str(b), "error": _bin_error(b, e)})
    click.echo(
        f"model {model}  input {emb.pre.size[0]}x{emb.pre.size[1]} {emb.pre.color} "
        f"(x - {emb.pre.mean:g}) / {emb.pre.std:g}  flip {'off' if no_flip else 'on'}  "
        f"providers {','.join(emb.providers)}"
    )
    if rows:
        click.echo(format_table(rows))
    if json_path:
        out = {
            "model": os.fspath(model),
            "preprocess": {
                "size": list(emb.pre.size),
                "mean": emb.pre.mean,
                "std": emb.pre.std,
                "color": emb.pre.color,
                "layout": emb.pre.layout,
                "source": emb.pre.source,
            },
            "flip": not no_flip,
            "folds": folds,
            "providers": emb.providers,
            "threads": threads,
            "results": rows,
            "errors": errors,
        }
        atomic_write_text(json_path, json.dumps(out, indent=2) + "\n")
        click.echo(f"results written to {json_path}")
    for err in errors:
        click.echo(f"error: {err['error']}", err=True)
    if errors:
        sys.exit(1)
