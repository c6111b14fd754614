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
    the fields of :class:`facekit.eval.verification.VerificationResult` and ``seconds``."""
    from facekit.formats.evalbin import load_bin
    from facekit.eval.verification import verify

    t0 = time.perf_counter()
    bins, issame = load_bin(path)
    emb, emb_flip = embed_bin(embedder, bins, str(path), batch_size, flip, progress)
    res = verify(emb, issame, emb_flip, folds=folds)
    return {"bin": str(path), **res.as_dict(), "seconds": round(time.perf_counter() - t0, 3)}


def _tar_cell(r: dict) -> str:
    if r.get("tar") is None:
        return f"undefined: {r.get('tar_undefined') or 'not measured'}"
    return f"{100 * r['tar']:.2f} ± {100 * r['tar_std']:.2f}"


def format_table(rows: list[dict]) -> str:
    """The results as a text table: accuracy and TAR in percent. A TAR@FAR that cannot be
    measured (a set without negatives or positives) reads ``undefined: <reason>``."""
    head = ["bin", "pairs", "accuracy %", "TAR@FAR=1e-3 %", "XNorm", "seconds"]
    body = [
        [
            Path(r["bin"]).name,
            str(r["pairs"]),
            f"{100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f}",
            _tar_cell(r),
            f"{r['xnorm']:.3f}" if r.get("xnorm") is not None else "-",
            f"{r['seconds']:.1f}",
        ]
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [head, *body]) for i in range(len(head))]
    widths[0] = max(widths[0], 24)

    def line(cells):
        return " ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(head), "-" * len(line(head))]
    return "\n".join(out + [line(c) for c in body])


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
    positive pairs. A bin that fails does not stop the others: the results of those that
    succeeded are printed (and written), then one error line per failed bin, and the exit
    status is 1.
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
