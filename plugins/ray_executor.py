"""The ``ray`` executor: shards run on a Ray cluster (or a local Ray instance started for the
run), one :class:`~facekit.pipeline.ShardWorker` per Ray actor.

Written as any executor plugin is (``plugins/executors.py``): :func:`facekit.pipeline.run_shards`
does the bounded queue, the shard order and the retries; this module only maps its five calls
onto Ray. A pool of ``workers`` actors (``num_cpus`` / ``num_gpus`` each, ``threads`` for
onnxruntime and OpenCV) builds its stages once; ``submit`` sends a shard to the actor with
the fewest shards queued and returns the call's ``ObjectRef``; ``wait`` is ``ray.wait``.
A dead actor (its process killed, its node gone) makes its shards :class:`ShardFailed`
and is replaced, so the shards run again; a stage that cannot start on an actor, or an
input missing on its node, is one :class:`~facekit.FacekitError` line naming the node.

Workers read the input files by path (storage every node mounts at the same path) and
send back encoded crops and result rows; the driver (``facekit run``) writes every output,
so the bytes equal a local run. The actors put their shards' progress on a bounded Ray queue
of the run (an actor of no CPU) that the driver reads while it waits. Ray is imported only when the executor starts: ``facekit``
works without it, and ``executor: {plugin: ray}`` without it says how to install it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
from typing import Optional

from pydantic import Field

import facekit
from facekit.pipeline import (
    PROGRESS_CHANNEL_SIZE,
    ProgressInbox,
    ProgressSender,
    ShardFailed,
    ShardWorker,
    WorkersParams,
    set_threads,
)

log = logging.getLogger("facekit")

WHERE = "executor (ray)"
INSTALL = 'pip install "facekit[ray]"'
#: seconds the TCP check of an ``address`` host:port waits before calling it unreachable
CONNECT_TIMEOUT = 10.0
#: seconds between two checks, while shards run, that the local Ray instance's raylet lives
NODE_CHECK_S = 0.5
#: seconds between two progress messages of an actor at least (each is a round trip to the
#: queue actor; a shard sends one per batch of 8 images otherwise)
RAY_PROGRESS_INTERVAL = 0.5


class RayParams(WorkersParams):
    address: Optional[str] = Field(
        None,
        description="Ray cluster to join: 'auto' (the cluster this machine belongs to), 'HOST:PORT' of "
        "its head node (GCS port, 6379 by default) or 'ray://HOST:10001' (Ray client); "
        "default: start a local Ray instance for the run and stop it after",
    )
    workers: int = Field(2, ge=1, le=100_000, description="Ray actors running shards (each builds its stages once)")
    num_cpus: float = Field(1.0, ge=0, le=1024, description="CPUs Ray reserves for each actor")
    num_gpus: float = Field(0.0, ge=0, le=64, description="GPUs Ray reserves for each actor (0: none)")
    start_timeout: float = Field(
        600.0, gt=0, le=86_400, description="seconds the actors may take to start (resources to free up, models to load)"
    )
    runtime_env: Optional[dict] = Field(
        None, description="Ray runtime_env of the actors (env_vars, pip, ...); facekit itself must be installed on every node"
    )


def import_ray():
    """The ``ray`` module. Raises FacekitError (one line, the install command) without it."""
    try:
        import ray
    except ImportError as e:
        raise facekit.FacekitError(f"{WHERE}: Ray is not installed ({facekit.one_line(e)}): {INSTALL}") from None
    return ray


class _Failure:
    """What an actor sends back instead of a result when the pipeline cannot run there."""

    __slots__ = ("message",)

    def __init__(self, message: str):
        self.message = message


def _node() -> str:
    """This node, as messages name it: its IP address and host name."""
    ip = "?"
    try:
        import ray

        ip = ray.util.get_node_ip_address()
        me = ray.get_runtime_context().get_node_id()
        ip = next(n["NodeManagerAddress"] for n in ray.nodes() if n.get("NodeID") == me)
    except Exception:  # the address Ray gave the node when it has one, else the host's
        pass
    return f"{ip} ({socket.gethostname()})"


class ShardActor:
    """The body of one Ray actor: a :class:`ShardWorker` built once, then shards one at a time.

    ``needed``: ``(label, path)`` of the files and folders this actor reads (model files,
    input folders); one missing on this node is reported, naming the node and the path,
    instead of every image becoming a reject. ``progress``: the run's Ray queue, where the
    worker puts its shards' progress after each batch (None: nowhere)."""

    def __init__(self, spec, threads: Optional[int], needed: list, progress=None):
        self.node = _node()
        self.error: Optional[str] = None
        self.worker = None
        missing = [(label, p) for label, p in needed if not os.path.exists(p)]
        if missing:
            label, p = missing[0]
            self.error = (
                f"{label}: {p} does not exist on Ray node {self.node}: put inputs and models on storage "
                "every node mounts at the same path"
            )
            return
        set_threads(threads)
        try:
            self.worker = ShardWorker(spec, threads, progress=None if progress is None else ProgressSender(progress, RAY_PROGRESS_INTERVAL))
        except Exception as e:
            detail = facekit.one_line(e) if isinstance(e, facekit.FacekitError) else f"{type(e).__name__}: {facekit.one_line(e)}"
            self.error = f"on Ray node {self.node}: {detail}"

    def ready(self) -> tuple:
        """``(node, pid, error or None)``, once the stages are built."""
        return self.node, os.getpid(), self.error

    def run(self, shard):
        """The shard's :class:`ShardResult`, or a :class:`_Failure` when the pipeline cannot run."""
        if self.error is not None:
            return _Failure(self.error)
        try:
            return self.worker(shard)
        except facekit.FacekitError as e:  # the run must stop (stages failing systematically): as locally
            return _Failure(str(e))
        except Exception as e:  # a bug: stops the run with one line, never retried
            return _Failure(f"on Ray node {self.node}: shard {shard.index}: {type(e).__name__}: {facekit.one_line(e)}")


def _lost_errors(ray) -> tuple:
    """Ray's exceptions for work that was lost (a process or node died): the shard may run again."""
    ex = ray.exceptions
    names = (
        "RayActorError",  # ActorDiedError, ActorUnavailableError
        "WorkerCrashedError",
        "NodeDiedError",
        "ObjectLostError",  # OwnerDiedError, ObjectReconstructionFailedError, ...
        "OutOfMemoryError",
        "LocalRayletDiedError",
        "TaskCancelledError",
    )
    return tuple(getattr(ex, n) for n in names if hasattr(ex, n))


def check_reachable(address: str) -> None:
    """Fail fast (one line) when ``address`` names a host:port nobody listens on: ``ray.init``
    itself retries for minutes. ``auto`` is resolved as Ray does (``RAY_ADDRESS``, else the
    last cluster started on this machine) and that address checked; ``local`` is left to Ray."""
    if address == "local":
        return
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            found = canonicalize_bootstrap_address("auto")
        except Exception:  # no cluster found: ray.init says so at once
            return
        if not found:
            return
        try:
            check_reachable(found)
        except facekit.FacekitError as e:
            raise facekit.FacekitError(
                f"{e} (address: auto found {found} in RAY_ADDRESS or as the last cluster started on this machine)"
            ) from None
        return
    rest = address.split("://", 1)[1] if "://" in address else address
    host, _, port = rest.rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise facekit.FacekitError(
            f"{WHERE}: address {address!r} is not 'auto', 'HOST:PORT' or 'ray://HOST:PORT': fix 'address:'"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise facekit.FacekitError(
            f"{WHERE}: cannot reach the Ray cluster at {address} ({e.strerror or e}): start its head node "
            "('ray start --head') or fix 'address:'"
        ) from None


class RayExecutor(facekit.Executor):
    """Runs shards on Ray actors: a local Ray instance started for the run, or a cluster."""

    name = "ray"
    description = "shards run on Ray actors: a local Ray started for the run, or a cluster (address: auto | HOST:PORT | ray://...)"
    Params = RayParams

    def start(self, spec):
        p = self.params
        ray = import_ray()
        self.ray = ray
        self._lost = _lost_errors(ray)
        self._owns = False  # whether close() disconnects (and, for a local instance, stops Ray)
        self._actors: list = []
        self._queued: list[int] = []
        self._calls: dict = {}  # ObjectRef -> (slot, actor, shard index)
        self.slots = p.workers * p.in_flight
        self._raylet = None  # the raylet process of the local Ray instance started for the run
        self._resume = getattr(spec, "resume", True)
        self._connect()
        if self._owns and p.address is None:
            self._raylet = _local_raylet(ray)
        try:
            self._check_resources()
            self._needed = _needed_paths(spec)
            opts = {"num_cpus": p.num_cpus, "num_gpus": p.num_gpus, "max_restarts": 0, "max_task_retries": 0}
            if p.runtime_env:
                opts["runtime_env"] = p.runtime_env
            self._cls = ray.remote(ShardActor).options(**opts)
            # the actors need the per-sample stages only (the executor's own class may live
            # in a module the nodes cannot import)
            self._spec = ray.put(dataclasses.replace(spec, executor=None, sinks=[]))
            self._progress = _progress_queue(ray)
            self._inbox = ProgressInbox(self._progress)
            self._actors = [self._new_actor() for _ in range(p.workers)]
            self._queued = [0] * p.workers
            self._wait_ready()
        except BaseException:
            self.close(cancel=True)
            raise

    def _connect(self) -> None:
        ray, p = self.ray, self.params
        if ray.is_initialized():  # the program running facekit joined a cluster itself
            if p.address not in (None, "auto"):
                current = ray.get_runtime_context().gcs_address
                if p.address.split("://")[-1] != current:
                    raise facekit.FacekitError(
                        f"{WHERE}: this process is already connected to the Ray cluster at {current}, not "
                        f"{p.address}: fix 'address:' or leave it out"
                    )
            log.info("%s: using this process's Ray connection", WHERE)
            return
        quiet = {"logging_level": logging.WARNING}
        if p.address is None:
            cpus = max(1, math.ceil(p.workers * p.num_cpus))
            try:
                ray.init(
                    address="local",
                    num_cpus=cpus,
                    include_dashboard=False,
                    **quiet,
                )
            except Exception as e:
                raise facekit.FacekitError(f"{WHERE}: cannot start a local Ray instance: {type(e).__name__}: {facekit.one_line(e)}") from None
        else:
            check_reachable(p.address)
            if p.address.startswith("ray://"):
                try:
                    import grpc  # noqa: F401  (the Ray client's transport)
                except ImportError:
                    raise facekit.FacekitError(
                        f"{WHERE}: address {p.address} needs the Ray client: pip install \"ray[client]\" "
                        "(or run facekit on a node of the cluster with address: auto)"
                    ) from None
            try:
                ray.init(address=p.address, **quiet)
            except (ConnectionError, TimeoutError) as e:
                auth = "" if os.environ.get("RAY_AUTH_MODE") else (
                    "; a cluster with token authentication also needs RAY_AUTH_MODE=token and its token "
                    "(RAY_AUTH_TOKEN or ~/.ray/auth_token) here"
                )
                raise facekit.FacekitError(
                    f"{WHERE}: cannot join the Ray cluster at {p.address} ({facekit.one_line(e)}): start its head node "
                    f"('ray start --head') or fix 'address:'{auth}"
                ) from None
            except Exception as e:
                raise facekit.FacekitError(
                    f"{WHERE}: cannot join the Ray cluster at {p.address}: {type(e).__name__}: {facekit.one_line(e)}"
                ) from None
        self._owns = True

    def _check_resources(self) -> None:
        """One actor asking more CPUs or GPUs than the whole cluster has would wait forever."""
        p = self.params
        have = self.ray.cluster_resources()
        for key, want in (("CPU", p.num_cpus), ("GPU", p.num_gpus)):
            if want > have.get(key, 0):
                raise facekit.FacekitError(
                    f"{WHERE}: each actor asks num_{key.lower()}s={want:g} but the Ray cluster has "
                    f"{have.get(key, 0):g} {key}(s) in all: lower num_{key.lower()}s or add nodes"
                )

    def _new_actor(self):
        return self._cls.remote(self._spec, self.params.threads, self._needed, self._progress)

    def _wait_ready(self) -> None:
        ray, p = self.ray, self.params
        try:
            info = ray.get([a.ready.remote() for a in self._actors], timeout=p.start_timeout)
        except ray.exceptions.GetTimeoutError:
            raise facekit.FacekitError(
                f"{WHERE}: {p.workers} actor(s) of num_cpus={p.num_cpus:g}, num_gpus={p.num_gpus:g} did not start "
                f"within {p.start_timeout:g} s (the cluster has {_resources(ray)}): lower workers, num_cpus or "
                "num_gpus, add nodes, or raise start_timeout"
            ) from None
        except self._lost as e:
            raise facekit.FacekitError(f"{WHERE}: an actor died while starting: {type(e).__name__}: {facekit.one_line(e)}") from None
        for node, pid, error in info:
            if error is not None:
                raise facekit.FacekitError(error)
        #: (node, pid) of each actor, in slot order (the tests kill one)
        self.actor_processes = [(node, pid) for node, pid, _ in info]
        log.info("%s: %d actor(s) on %s", WHERE, len(info), ", ".join(sorted({n for n, _, _ in info})))

    def submit(self, shard):
        slot = min(range(len(self._actors)), key=self._queued.__getitem__)
        actor = self._actors[slot]
        ref = actor.run.remote(shard)
        self._queued[slot] += 1
        self._calls[ref] = (slot, actor, shard.index)
        return ref

    def wait(self, handles):
        self._check_node()
        while True:  # with a timeout: a node that died is seen before Ray ends this process
            ready, rest = self.ray.wait(handles, num_returns=1, timeout=NODE_CHECK_S)
            if ready:
                break
            self._check_node()
            if self._inbox.collect():  # progress of the shards in flight: counted now
                return []
        if rest:  # every other finished one too: fewer round trips
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return ready

    def progress(self):
        """The progress the actors put on the run's Ray queue since the last call."""
        return self._inbox.take()

    def result(self, handle):
        slot, actor, index = self._calls.pop(handle)
        current = self._actors[slot] is actor
        if current:
            self._queued[slot] -= 1
        self._check_node()
        try:
            res = self.ray.get(handle)
        except self._lost as e:
            if current:  # replace the dead actor; its other shards fail the same way and run again
                self._replace(slot, actor)
            raise ShardFailed(
                f"the Ray actor running shard {index} was lost ({type(e).__name__}: {facekit.one_line(e, 200)})"
            ) from None
        except self.ray.exceptions.RayError as e:
            raise facekit.FacekitError(f"{WHERE}: shard {index}: {type(e).__name__}: {facekit.one_line(e)}") from None
        if isinstance(res, _Failure):
            raise facekit.FacekitError(res.message)
        return res

    def _check_node(self) -> None:
        """Raise one line when the raylet of the local Ray instance started for the run died
        (killed, out of memory): the node is lost with its actors and object store, and Ray
        ends this process (no cleanup, no message) once it notices, so the run stops first."""
        if self._raylet is None or self._raylet.poll() is None:
            return
        raylet, self._raylet = self._raylet, None
        code = raylet.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        again = ("a rerun of the same command resumes from the shards finished so far" if self._resume
                 else "a rerun of the same command starts over (resume: false)")
        raise facekit.FacekitError(
            f"{WHERE}: the local Ray node of this run was lost (its raylet, pid {raylet.pid}, ended: {how}); "
            f"nothing was published, previous outputs are unchanged; {again}"
        )

    def _replace(self, slot: int, actor) -> None:
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass
        self._actors[slot] = self._new_actor()
        self._queued[slot] = 0
        log.warning("%s: actor %d was lost; started a new one", WHERE, slot)

    def close(self, cancel=False):
        ray = getattr(self, "ray", None)
        if ray is None:
            return
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self._actors, self._calls = [], {}
        queue, self._progress = getattr(self, "_progress", None), None
        if queue is not None:
            try:
                ray.kill(queue.actor, no_restart=True)
            except Exception:
                pass
        if self._owns:
            self._owns = False
            ray.shutdown()

    def workers(self):
        return self.params.workers


def _local_raylet(ray):
    """The raylet process (a :class:`subprocess.Popen`) of the local Ray instance this process
    started, or None where Ray does not say (Ray keeps it in a private attribute)."""
    try:
        node = ray._private.worker._global_node
        return node.all_processes[ray._private.ray_constants.PROCESS_TYPE_RAYLET][0].process
    except Exception:  # another Ray version: the node is not watched
        return None


def _progress_queue(ray):
    """The run's bounded Ray queue of progress messages: an actor reserving no CPU (the
    workers may hold them all), on this node where Ray allows (the driver reads it)."""
    from ray.util.queue import Queue

    opts: dict = {"num_cpus": 0}
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    except Exception:  # a Ray client connection has no node of its own: anywhere
        pass
    return Queue(PROGRESS_CHANNEL_SIZE, actor_options=opts)


def _resources(ray) -> str:
    try:
        have = ray.cluster_resources()
        return f"{have.get('CPU', 0):g} CPU(s), {have.get('GPU', 0):g} GPU(s)"
    except Exception:
        return "unknown resources"


def _needed_paths(spec) -> list[tuple[str, str]]:
    """``(label, path)`` that every actor reads: each Path parameter of the per-sample stages
    (detector, aligner, recognizer, augmenters, ...: model files) and each folder parameter
    of the source (where the images are; a file parameter such as a .rec is read by the
    driver, which sends the bytes). Sinks and the executor run on the driver."""
    from pathlib import Path

    stages = []
    for f in dataclasses.fields(spec):
        if f.name in ("sinks", "executor"):
            continue
        v = getattr(spec, f.name)
        # a stage's config: its validated params and where it was configured
        stages += [x for x in (v if isinstance(v, list) else [v]) if hasattr(x, "params") and hasattr(x, "where")]
    out = []
    for sc in stages:
        for k in type(sc.params).model_fields:
            v = getattr(sc.params, k)
            if isinstance(v, Path) and (all(sc is not x for x in spec.sources) or v.is_dir()):
                out.append((f"{sc.where}: {k}", str(v)))
    return out


@facekit.hookimpl
def register_executors(register):
    register(RayExecutor)


__all__ = ["RayExecutor", "RayParams", "ShardActor", "check_reachable", "import_ray"]
