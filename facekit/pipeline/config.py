"""Pipeline configs: YAML (``yaml.safe_load`` rules) -> validated :class:`PipelineSpec`.

Everything is checked before any work starts: plugin names against the installed plugins,
every stage's parameters against its pydantic ``Params`` model (unknown and missing keys,
types, paths that must exist). Errors name the config file, line, stage and key.

Paths: input paths (source folders, model files) resolve against the config file's
folder; ``output`` too; sinks' output paths resolve against ``output``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from pydantic import Field, ValidationError

from facekit.errors import ConfigError, FacekitError, one_line
from facekit.params import path_problem
from facekit.pipeline.decisions import MergeConfig
from facekit.pipeline.identity import face_choice_stages
from facekit.pipeline.overrides import Override, apply_overrides
from facekit.pipeline.pathcheck import check_output, check_sinks
from facekit.pipeline.sources import NAME_RE, default_name
from facekit.plugins import Registry, get_registry
from facekit.stages import InputPath, OptionalInputPath, Params, Stage

#: a pipeline config larger than this is refused unread (configs are a few hundred bytes)
MAX_CONFIG_BYTES = 1 << 20
#: YAML nodes a config may expand to, aliases counted at every use (alias bombs)
MAX_NODES = 20_000


class EncodeConfig(Params):
    quality: int = Field(95, ge=1, le=100, description="JPEG quality of re-encoded (aligned) faces")


class TopLevel(Params):
    output: OptionalInputPath = Field(description="run folder: rejects.tsv, summary.json; base of sink paths")
    source: Optional[dict] = None
    sources: Optional[list[dict]] = Field(
        None, min_length=1, description="several sources read one after the other (instead of 'source'), each a "
        "source stage with a 'name:' (default: its path's stem): identities become <name>/<identity>, labels are "
        "numbered along that order (see facekit.pipeline.sources)"
    )
    merge: Optional[MergeConfig] = Field(
        None, description="the dataset-level decision step once every shard is done: identities that are one "
        "person (apply or propose merges), the same image under two identities, faces filed under the wrong "
        "identity, overlap with verification bins ({identities: propose, bins: [lfw.bin]}; needs a recognizer)"
    )
    decisions: Optional[InputPath] = Field(
        None, description="a reviewed decisions.tsv (the decision column edited) to apply: outputs change for "
        "exactly the decisions changed (see facekit.pipeline.decisions)"
    )
    detector: Optional[dict] = None
    aligner: Optional[dict] = None
    recognizer: Optional[dict] = None
    quality: Optional[dict] = Field(
        None, description="measure each aligned face (blur, pose, size, brightness, contrast, embedding norm) and "
        "reject those over the thresholds given: {min_blur: 50, max_yaw: 45, ...} (plugin: signals, the default), "
        "or {plugin: onnx, model: quality.onnx, min_quality: ...} for a learned quality model too"
    )
    clean: Optional[dict] = Field(
        None, description="decide per identity once a shard's faces are embedded: duplicates, two people under one "
        "name, label noise ({duplicates: reject, label_noise: flag, mixed: flag}; plugin: identity, the default)"
    )
    augmenters: list[dict] = Field(default_factory=list)
    sinks: list[dict] = Field(min_length=1)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    workers: Optional[int] = Field(
        None, ge=0, description="shorthand for 'executor: {plugin: processes, workers: N}' (0: 'executor: "
        "{plugin: inprocess}', shards one at a time in this process)"
    )
    executor: Optional[dict] = Field(
        None, description="where shards run: {plugin: threads | inprocess | processes | ..., ...} (default: threads, "
        "one per core, for a pipeline that decodes images (a detector, aligner, recognizer or augmenter); inprocess "
        "for pass-through packing)"
    )
    shard_size: Optional[int] = Field(
        None, ge=1, le=1_000_000, description="source items per shard, cut at identity boundaries (default: about 1000; "
        "on several workers the last shards of a job are smaller)"
    )
    report: bool = Field(False, description="write the HTML QA report to <output>/report once the outputs are published")
    resume: Optional[bool] = Field(
        None,
        description="keep finished shards in <output>/.facekit/shards so a crashed run resumes (costs disk: "
        "about one more copy of the kept faces until the outputs are published); default: on when the "
        "pipeline decodes images (a detector, aligner or augmenter), off for pass-through packing, which "
        "is as fast to redo as to resume. With a 'clean' stage or a 'merge' step the shards stay after the run "
        "is published, so that other merge settings or a reviewed decisions.tsv rerun only the decision step",
    )


@dataclass
class StageConfig:
    """One validated stage: its class, its params and where it was configured."""

    kind: str
    name: str
    cls: type
    params: Params
    where: str  # e.g. "sinks[0] (mxrec)"

    def with_params(self, **changes) -> "StageConfig":
        """This stage with some parameters changed (already validated values)."""
        return StageConfig(self.kind, self.name, self.cls, self.params.model_copy(update=changes), self.where)

    def build(self) -> Stage:
        """Construct the stage. Raises ConfigError naming the stage when its constructor
        fails (a model that does not load, a broken plugin), never a raw traceback."""
        try:
            return self.cls(self.params)
        except FacekitError:
            raise
        except Exception as e:
            raise ConfigError(f"{self.where}: cannot start: {type(e).__name__}: {one_line(e)}") from None


@dataclass
class PipelineSpec:
    """A validated pipeline, picklable (worker processes rebuild stages from it)."""

    config_path: Optional[Path]
    output: Path
    source: StageConfig
    detector: Optional[StageConfig]
    aligner: Optional[StageConfig]
    recognizer: Optional[StageConfig] = None
    #: the ``quality`` stage (config key ``quality:``); not :attr:`quality`, the JPEG quality
    face_quality: Optional[StageConfig] = None
    #: the ``clean`` stage (a :class:`facekit.Cleaner`)
    cleaner: Optional[StageConfig] = None
    augmenters: list[StageConfig] = field(default_factory=list)
    sinks: list[StageConfig] = field(default_factory=list)
    quality: int = 95
    executor: Optional[StageConfig] = None
    #: whether the config named the executor (``executor:`` or ``workers:``), not the default
    executor_named: bool = False
    shard_size: Optional[int] = None
    resume: bool = True  # see TopLevel.resume
    report: bool = False
    #: ``sources:``: the sources after the first (``source``), and every source's name
    #: (empty with one source: its identities keep their names)
    extra_sources: list[StageConfig] = field(default_factory=list)
    source_names: list[str] = field(default_factory=list)
    #: the dataset-level decision step (``merge:``)
    merge: Optional[MergeConfig] = None
    #: a reviewed decisions.tsv to apply (``decisions:``)
    decisions: Optional[Path] = None
    #: the config has a ``clean:`` stage of its own (not only ``detector: {select: identity}``,
    #: which becomes a cleaner that makes no other decision)
    clean_named: bool = False

    @property
    def sources(self) -> list[StageConfig]:
        """Every source stage, in order."""
        return [self.source, *self.extra_sources]

    @property
    def decides(self) -> bool:
        """Whether the run keeps its shards for the decision step and writes decisions.tsv
        (a ``clean`` stage, a ``merge`` step or a reviewed decisions file)."""
        return self.clean_named or self.merge is not None or self.decisions is not None

    @property
    def workers(self) -> int:
        """The executor's workers (processes, threads, actors; 0: ``inprocess``, one shard at
        a time in this process)."""
        ex = self.executor
        return int(getattr(ex.params, "workers", 0)) if ex is not None and ex.name != "inprocess" else 0

    def set_workers(self, workers: int, registry: Registry | None = None) -> None:
        """Run on ``workers`` workers (0: ``inprocess``), as ``-w`` asks: the executor the
        config named when it has a ``workers`` parameter (``threads``, ``processes``, ``ray``:
        its other settings kept), else, as ``workers: N`` in the config, ``processes``."""
        registry = registry or get_registry()
        ex = self.executor
        if workers == 0:
            cls = registry.get("executor", "inprocess")
            self.executor = StageConfig("executor", "inprocess", cls, cls.Params(), "executor (inprocess)")
        elif ex is not None and (ex.name == "processes" or (self.executor_named and "workers" in ex.cls.Params.model_fields)):
            self.executor = ex.with_params(workers=workers)
        else:
            cls = registry.get("executor", "processes")
            self.executor = StageConfig("executor", "processes", cls, cls.Params(workers=workers), "executor (processes)")


def _compose(text: str, source: str):
    """The YAML node graph of ``text``, refused when it is too large, too deep, or expands
    (aliases counted at each use) to more than :data:`MAX_NODES` nodes."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None  # reported with its line by safe_load
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply to be a pipeline config") from None
    if root is None:
        return None
    sizes: dict[int, int] = {}
    stack = [(root, False)]
    while stack:  # post-order, iterative: expanded size of each node, each node once
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        kids = []
        if isinstance(node, yaml.MappingNode):
            kids = [n for kv in node.value for n in kv]
        elif isinstance(node, yaml.SequenceNode):
            kids = node.value
        if not done:
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in sizes)
            continue
        total = 1 + sum(sizes[id(k)] for k in kids)
        if total > MAX_NODES:
            raise ConfigError(
                f"{source}:{node.start_mark.line + 1}: YAML expands to more than {MAX_NODES} values "
                "(aliases repeated at every use: an alias bomb?)"
            )
        sizes[id(node)] = total
    return root


def _line_map(root) -> dict[tuple, int]:
    """Map each key path (``('sinks', 0, 'path')``) to its 1-based line in the YAML.
    A node reached again through an alias is not walked again (the graph may be a DAG)."""
    out: dict[tuple, int] = {}
    if root is None:
        return out
    walked: set[int] = set()
    stack = [(root, ())]
    while stack:
        node, path = stack.pop()
        out.setdefault(path, node.start_mark.line + 1)
        if id(node) in walked:
            continue
        walked.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else None
                out[path + (key,)] = k.start_mark.line + 1
                stack.append((v, path + (key,)))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                stack.append((v, path + (i,)))
    return out


class _Errors:
    def __init__(self, source: str, lines: dict, overridden: list[tuple[tuple, str]] = ()):
        self.source, self.lines, self.items = source, lines, []
        self.overridden = overridden  # (location, label) of each override: errors there name it

    def add(self, loc: tuple, msg: str) -> None:
        over = [(len(p), i, label) for i, (p, label) in enumerate(self.overridden) if loc[: len(p)] == p]
        if over:  # the deepest override at or above loc, the later of two on one key
            self.items.append(f"{max(over)[2]}: {msg}")
            return
        line = None
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                line = self.lines[loc[:n]]
                break
        self.items.append(f"{self.source}:{line}: {msg}" if line else f"{self.source}: {msg}")

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError("invalid pipeline config:\n  " + "\n  ".join(self.items))


def _where(loc: tuple) -> str:
    s = ""
    for part in loc:
        s += f"[{part}]" if isinstance(part, int) else (f".{part}" if s else str(part))
    return s


def _pydantic_errors(errs: _Errors, e: ValidationError, base: tuple, label: str, valid: list[str]) -> None:
    for err in e.errors():
        loc = tuple(err["loc"])
        key = _where(loc)
        if err["type"] == "extra_forbidden":
            errs.add(base + loc, f"{label}: unknown parameter {key!r} (valid: {', '.join(valid) or 'none'})")
        elif err["type"] == "missing":
            errs.add(base, f"{label}: missing required parameter {key!r}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            errs.add(base + loc, f"{label}: parameter {key!r}: {msg}" if key else f"{label}: {msg}")


def _paths(params: Params) -> list[tuple[str, Path]]:
    """``(name, path)`` of every Path-valued parameter of a stage."""
    return [(k, v) for k in type(params).model_fields if isinstance(v := getattr(params, k), Path)]


def _default_executor(per_sample: list) -> str:
    """The executor of a config that names none: ``threads`` (a shard worker thread per
    core) for a pipeline that decodes images; ``inprocess`` for pass-through packing (reading
    files and checking headers: one thread keeps up), where a stage says it is not
    ``thread_safe``, and where a stage runs on an accelerator (its onnxruntime ``providers``
    name one besides the CPU: one session feeds it better than a session per core)."""
    stages = [s for s in per_sample if s is not None]
    if not stages or not all(getattr(s.cls, "thread_safe", True) for s in stages):
        return "inprocess"
    for s in stages:
        if any(p != "CPUExecutionProvider" for p in getattr(s.params, "providers", None) or ()):
            return "inprocess"
    return "threads"


def load_config(
    path: str | os.PathLike,
    registry: Registry | None = None,
    output: str | os.PathLike | None = None,
    overrides: list[Override] | None = None,
) -> PipelineSpec:
    """Read and validate a pipeline YAML file.

    Args:
        path: the config file.
        registry: plugins to resolve against (default: the installed ones).
        output: overrides the config's ``output`` (relative to the current folder).
        overrides: settings laid over the file's before it is validated (``--set``, see
            :mod:`facekit.pipeline.overrides`); errors there name the override, not a line.
    Raises:
        ConfigError: unreadable file, bad YAML or any invalid setting (all listed at once).
    """
    problem = path_problem(os.fspath(path))
    if problem:
        raise ConfigError(f"{path!r}: cannot be a config file: {problem}")
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size} bytes is too large for a pipeline config")
        if not path.is_file() and path.exists():
            raise ConfigError(f"{path}: not a regular file")
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a YAML text file (byte {e.start} is not UTF-8)") from None
    if "\0" in text:
        raise ConfigError(f"{path}: not a YAML text file (it holds NUL bytes)")
    return parse_config(text, source=str(path), config_dir=path.resolve().parent, registry=registry, output=output, config_path=path,
                        overrides=overrides)


def parse_config(
    text: str,
    source: str = "<config>",
    config_dir: str | os.PathLike = ".",
    registry: Registry | None = None,
    output: str | os.PathLike | None = None,
    config_path: Path | None = None,
    overrides: list[Override] | None = None,
) -> PipelineSpec:
    """Validate a pipeline given as YAML text; see :func:`load_config`."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: {len(text)} characters is too large for a pipeline config")
    root = _compose(text, source)
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply to be a pipeline config") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a pipeline config must be a mapping with source, sinks, output")
    overridden = apply_overrides(data, overrides or [])
    if output is not None:
        problem = path_problem(os.fspath(output))
        if problem:
            raise ConfigError(f"output {os.fspath(output)!r} (given instead of the config's): {problem}")
        data["output"] = str(Path(output).resolve())
    registry = registry or get_registry()
    errs = _Errors(source, _line_map(root), overridden)
    ctx = {"config_dir": str(config_dir)}
    try:
        top = TopLevel.model_validate(data, context=ctx)
    except ValidationError as e:
        _pydantic_errors(errs, e, (), "config", list(TopLevel.model_fields))
        errs.raise_if_any()
        raise
    ctx["output_dir"] = str(top.output)

    def stage(kind: str, raw: dict, loc: tuple) -> Optional[StageConfig]:
        label = _where(loc)
        if not isinstance(raw, dict) or "plugin" not in raw:
            errs.add(loc, f"{label}: needs 'plugin: NAME'")
            return None
        name = raw["plugin"]
        try:
            cls = registry.get(kind, str(name))
        except ConfigError as e:
            errs.add(loc + ("plugin",), f"{label}: {e}")
            return None
        label = f"{label} ({name})"
        params = {k: v for k, v in raw.items() if k != "plugin"}
        try:
            p = cls.Params.model_validate(params, context=ctx)
        except ValidationError as e:
            _pydantic_errors(errs, e, loc, label, list(cls.Params.model_fields))
            return None
        return StageConfig(kind, str(name), cls, p, label)

    extra: list = []
    names: list[str] = []
    if (top.source is None) == (top.sources is None):
        errs.add(("source",) if top.source is not None else (), "config: give 'source' (one) or 'sources' (a list), "
                 "exactly one of them")
        errs.raise_if_any()
    if top.source is not None:
        src = stage("source", top.source, ("source",))
    else:
        built = []
        for i, raw in enumerate(top.sources):
            raw = dict(raw) if isinstance(raw, dict) else raw
            name = raw.pop("name", None) if isinstance(raw, dict) else None
            sc = stage("source", raw, ("sources", i))
            if sc is None:
                continue
            name = default_name(sc.params) if name is None else str(name)
            if not NAME_RE.match(name):
                errs.add(("sources", i), f"{sc.where}: name {name!r}: give 'name:' with 1 to 64 characters, no '/' or "
                         "control characters (it prefixes the identities: <name>/<identity>)")
            elif name in names:
                errs.add(("sources", i), f"{sc.where}: name {name!r} is also sources[{names.index(name)}]'s: give "
                         "each source its own 'name:'")
            if i:
                for k in ("start_id", "min_images"):
                    if k in sc.params.model_fields_set and getattr(sc.params, k) != getattr(built[0].params, k):
                        errs.add(("sources", i, k), f"{sc.where}: {k} applies to the whole run: set it on sources[0]")
            if getattr(sc.params, "labels", None) == "keep" and "labels" in sc.params.model_fields_set:
                errs.add(("sources", i, "labels"), f"{sc.where}: labels: keep: several sources' class ids overlap, "
                         "the run numbers identities itself (remove 'labels' or say renumber)")
            names.append(name)
            built.append(sc)
        errs.raise_if_any()
        src, extra = built[0], built[1:]
        if len(built) == 1:
            names = []
    det = stage("detector", top.detector, ("detector",)) if top.detector is not None else None
    ali = stage("aligner", top.aligner, ("aligner",)) if top.aligner is not None else None
    rec = stage("recognizer", top.recognizer, ("recognizer",)) if top.recognizer is not None else None
    qual = None
    if top.quality is not None:
        raw = top.quality if not isinstance(top.quality, dict) or "plugin" in top.quality else {"plugin": "signals", **top.quality}
        qual = stage("quality", raw, ("quality",))
    cln = None
    if top.clean is not None:
        raw = top.clean if not isinstance(top.clean, dict) or "plugin" in top.clean else {"plugin": "identity", **top.clean}
        cln = stage("cleaner", raw, ("clean",))
    augs = [stage("augmenter", a, ("augmenters", i)) for i, a in enumerate(top.augmenters)]
    sinks = [stage("sink", s, ("sinks", i)) for i, s in enumerate(top.sinks)]
    if top.executor is not None:
        if top.workers is not None:
            errs.add(("workers",), "config: give 'workers' or 'executor', not both (workers: N is short for "
                     "executor: {plugin: processes, workers: N})")
        ex = stage("executor", top.executor, ("executor",))
    elif top.workers:
        ex = stage("executor", {"plugin": "processes", "workers": top.workers}, ("workers",))
    elif top.workers == 0:
        ex = stage("executor", {"plugin": "inprocess"}, ("workers",))
    else:
        ex = stage("executor", {"plugin": _default_executor([det, ali, rec, qual, cln, *augs])}, ("executor",))
    errs.raise_if_any()
    per_sample = [s for s in (det, ali, rec, qual, cln, *augs) if s is not None]
    unsafe = [s.where for s in per_sample if not getattr(s.cls, "thread_safe", True)]
    if ex.name == "threads" and unsafe:
        errs.add(
            ("executor",),
            f"{ex.where}: {', '.join(unsafe)} cannot run on several threads of one process (its plugin says "
            "thread_safe = False): use 'executor: {plugin: processes}' or 'workers: 0'",
        )

    if ali is not None:
        if det is None:  # a source's landmarks (the list source) align without a detector
            if not all(getattr(s.cls, "provides_landmarks", False) for s in (src, *extra)):
                errs.add(("aligner",), f"{ali.where}: an aligner needs a detector (no faces to align)")
        elif ali.cls.needs_landmarks and not det.cls.provides_landmarks:
            errs.add(
                ("aligner",),
                f"{ali.where} needs five landmarks but {det.where} gives boxes only; "
                "use a landmark detector or the 'boxcrop' aligner",
            )
    if rec is not None and det is not None and ali is None:
        errs.add(("recognizer",), f"{rec.where} embeds aligned faces: add an aligner after {det.where}")
    if qual is not None:
        qp = qual.params
        if det is not None and ali is None:
            errs.add(("quality",), f"{qual.where} measures aligned faces: add an aligner after {det.where}")
        if qp.min_embedding_norm is not None and rec is None:
            errs.add(("quality", "min_embedding_norm"),
                     f"{qual.where}: min_embedding_norm needs a recognizer (the norm is its embedding's)")
        if qp.min_quality is not None and not getattr(qual.cls, "scores", False):
            errs.add(("quality", "min_quality"),
                     f"{qual.where}: min_quality needs a learned quality model (plugin: onnx, model: ...)")
        pose = [k for k in ("max_yaw", "max_pitch", "max_roll") if getattr(qp, k) is not None]
        if pose and det is not None and not det.cls.provides_landmarks:
            errs.add(("quality", pose[0]),
                     f"{qual.where}: {pose[0]} needs five landmarks, but {det.where} gives boxes only")
    if top.merge is not None and rec is None:
        errs.add(("merge",), "merge compares identities by their faces' embeddings: add 'recognizer: {plugin: onnx, "
                 "model: ...}'")
    if top.merge is not None and top.resume is False:
        errs.add(("resume",), "config: the merge step reads the finished shards again: resume cannot be off")
    if top.decisions is not None and top.clean is None and top.merge is None:
        errs.add(("decisions",), "config: decisions: applies a reviewed decisions.tsv of a run with a 'clean' stage "
                 "or a 'merge' step; this pipeline has neither")
    if cln is not None:
        if rec is None:
            errs.add(("clean",), f"{cln.where} compares the faces' embeddings: add 'recognizer: {{plugin: onnx, "
                     "model: ...}'")
    det, cln = face_choice_stages(det, cln, rec, stage, errs.add)  # select: identity, in the clean stage
    for i, aug in enumerate(augs):
        if aug.cls.needs_landmarks and det is not None and (ali is None or not det.cls.provides_landmarks):
            why = "gives boxes only" if not det.cls.provides_landmarks else "has no aligner after it"
            errs.add(
                ("augmenters", i),
                f"{aug.where} needs the five landmarks of aligned faces, but {det.where} {why}; use a landmark "
                "detector and an aligner (arcface), or feed already aligned crops without a detector",
            )
    for i, sc in enumerate(sinks):
        if getattr(sc.cls, "needs_embeddings", False) and rec is None:
            errs.add(
                ("sinks", i),
                f"{sc.where} stores the faces' embeddings: add 'recognizer: {{plugin: onnx, model: ...}}' "
                "(after an aligner, or on already aligned crops with no detector)",
            )
        if getattr(sc.cls, "needs_landmarks", False) and not (det is not None and det.cls.provides_landmarks) \
                and not all(getattr(c.cls, "provides_landmarks", False) for c in (src, *extra)):
            why = f"{det.where} gives boxes only" if det is not None else "no detector finds them"
            errs.add(("sinks", i), f"{sc.where} writes five landmarks, but {why}: add a landmark detector or a list of them")
    uniform = [i for i, sc in enumerate(sinks) if sc.cls.uniform_size]
    if det is not None and ali is None and uniform:
        errs.add(
            ("sinks", uniform[0]),
            f"{sinks[uniform[0]].where} stores images of one size, but {det.where} without an aligner passes "
            "whole photos of every size; add an aligner (arcface, or boxcrop for box-only detectors)",
        )
    check_output(top.output, errs.add)
    check_sinks(
        top.output,
        [(("sinks", i) + (k,), sc.where, v) for i, sc in enumerate(sinks) for k, v in _paths(sc.params)],
        [(sc.where, v) for sc in [src, *extra, det, ali, *augs] if sc is not None for _, v in _paths(sc.params)],
        errs.add,
    )
    errs.raise_if_any()
    return PipelineSpec(
        config_path=config_path,
        output=top.output,
        source=src,
        detector=det,
        aligner=ali,
        recognizer=rec,
        face_quality=qual,
        cleaner=cln,
        augmenters=augs,
        sinks=sinks,
        quality=top.encode.quality,
        executor=ex,
        executor_named=top.executor is not None or top.workers is not None,
        shard_size=top.shard_size,
        resume=top.resume if top.resume is not None else bool(det or ali or rec or qual or cln or augs),  # all decode
        report=top.report,
        extra_sources=extra,
        source_names=names,
        merge=top.merge,
        decisions=top.decisions,
        clean_named=top.clean is not None,
    )
