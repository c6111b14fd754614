"""``facekit align SRC DST``: the standard pipeline without a YAML file.

It builds the config a user would write (a ``folders`` source at SRC, a detector, the
``arcface`` aligner, an ``mxrec`` or ``folders`` sink, output DST) and runs it through the
same code as ``facekit run`` (:func:`facekit.pipeline.config.parse_config`, then the
engine), so its outputs are the bytes ``facekit run`` writes for that config;
``--print-config`` shows the config. Each option goes in as an override
(:mod:`facekit.pipeline.overrides`): a config error names the option it came from
(``SRC photos: source (folders): parameter 'root': ...``).
"""

from __future__ import annotations

import os
import sys

import click

from facekit.cli.main import parse_sets, run_spec, set_option
from facekit.errors import ConfigError

#: the detector without ``--detector``/``--model``: the quickstart's, no model file needed
DEFAULT_DETECTOR = "mtcnn"
#: the detector that runs a model file given without ``--detector`` (SCRFD and RetinaFace ONNX)
MODEL_DETECTOR = "retinaface"
#: the sink of each ``--to`` (its path inside DST)
SINKS = {"rec": {"plugin": "mxrec", "path": "rec"}, "folders": {"plugin": "folders", "path": "aligned"}}


def _model_value(model: str) -> str:
    """A catalogue name as given (the cached file); a file as an absolute path."""
    from facekit.models import CATALOGUE

    return model if model in CATALOGUE else os.path.abspath(model)


def _detector(detector: str | None, model: str | None) -> tuple[str, str]:
    """The detector plugin and the option that chose it."""
    if detector:
        return detector, f"--detector {detector}"
    if not model:
        return DEFAULT_DETECTOR, f"--detector {DEFAULT_DETECTOR} (the default)"
    from facekit.models import CATALOGUE

    entry = CATALOGUE.get(model)
    if entry is not None and entry.kind != "detector":
        raise ConfigError(f"--model {model}: a {entry.kind} model, not a detector ('facekit models' lists them)")
    return (entry.plugin if entry is not None else MODEL_DETECTOR), f"--model {model}"


def align_overrides(src, dst, detector=None, model=None, to="rec", workers=None, registry=None) -> list:
    """The config of ``facekit align`` as overrides of an empty config, each labelled with
    the option it comes from.

    Args:
        src: the photos, ``SRC/<identity>/<image>`` (made absolute).
        dst: the run's output folder (made absolute).
        detector: a detector plugin; default: the one ``model`` names in the catalogue,
            ``retinaface`` for a model file, else ``mtcnn``.
        model: the detector's model, a file or a catalogue name (``facekit models``).
        to: ``rec`` (an ``mxrec`` sink at DST/rec) or ``folders`` (DST/aligned).
        workers: ``workers: N`` (processes; 0: in this process); default: threads.
        registry: plugins to look the detector up in (default: the installed ones): the
            ``boxcrop`` aligner replaces ``arcface`` after a detector that gives no landmarks.
    Raises:
        ConfigError: ``--model`` names a recognition model.
    """
    from facekit.pipeline.overrides import Override
    from facekit.plugins import get_registry

    name, chose = _detector(detector, model)
    aligner = "arcface"
    try:
        if not (registry or get_registry()).get("detector", name).provides_landmarks:
            aligner = "boxcrop"  # e.g. haar: boxes only
    except ConfigError:
        pass  # an unknown detector: the config reports it, naming the option
    ovs = [
        Override(("output",), os.path.abspath(dst), f"DST {dst}"),
        Override(("source",), {"plugin": "folders", "root": os.path.abspath(src)}, f"SRC {src}"),
        Override(("detector",), {"plugin": name}, chose),
    ]
    if model:
        ovs.append(Override(("detector", "model"), _model_value(model), f"--model {model}"))
    ovs += [
        Override(("aligner",), {"plugin": aligner}, f"aligner {aligner} (after {chose})"),
        Override(("sinks",), [dict(SINKS[to])], f"--to {to}"),
    ]
    if workers is not None:
        ovs.append(Override(("workers",), workers, f"-w {workers}"))
    return ovs


def config_text(overrides) -> str:
    """The YAML config the overrides make (what ``--print-config`` shows)."""
    import yaml

    from facekit.pipeline.overrides import apply_overrides

    data: dict = {}
    apply_overrides(data, overrides)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@click.command("align")
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@click.option("--detector", metavar="NAME", help=f"detector plugin (default: {DEFAULT_DETECTOR}, no model file; with "
              f"--model alone: the model's, {MODEL_DETECTOR} for a file)")
@click.option("--model", metavar="M", help="the detector's model: an ONNX file, or a name from 'facekit models' "
              "(downloaded with 'facekit models get NAME')")
@click.option("--to", type=click.Choice(sorted(SINKS)), default="rec", show_default=True,
              help="rec: RecordIO in DST/rec (train.rec, train.idx, property, train.lst); folders: DST/aligned/<id>/")
@click.option("-w", "--workers", type=click.IntRange(0, 512), help="worker processes (as 'workers: N'); 0: in this "
              "process; default: a thread per core")
@set_option
@click.option("--print-config", is_flag=True, help="print the config this runs (YAML, for 'facekit run') and exit")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def align_command(src, dst, detector, model, to, workers, sets, print_config, quiet):
    """Detect, align (ArcFace 112x112) and pack the photos in SRC/<identity>/<image> into DST.

    The standard pipeline without a YAML file: a folders source, a detector, the arcface
    aligner (boxcrop after a detector without landmarks) and a RecordIO or folders sink,
    run exactly as 'facekit run' runs that config (--print-config shows it). Identities
    with fewer than 2 faces are left out (--set source.min_images=1 keeps them)."""
    from facekit.pipeline.config import parse_config

    try:
        overrides = align_overrides(src, dst, detector, model, to, workers)
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    overrides += parse_sets(sets)
    try:
        spec = parse_config("{}", source="facekit align", config_dir=os.getcwd(), overrides=overrides)
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    if print_config:
        click.echo(f"# facekit align {src} {dst}: run it with 'facekit run FILE'", nl=True)
        click.echo(config_text(overrides), nl=False)
        return
    run_spec(spec, quiet=quiet)
