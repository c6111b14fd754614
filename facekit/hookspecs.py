"""facekit's pluggy hook specifications (project name ``facekit``).

A plugin is a module found through an entry point in the ``facekit`` group. It implements

.. code-block:: python

    import facekit

    @facekit.hookimpl
    def register_stages(register):
        register(MyDetector)       # a subclass of facekit.Detector (or Source, Sink, ...)

    @facekit.hookimpl
    def register_executors(register):
        register(MyExecutor)       # a subclass of facekit.Executor

    @facekit.hookimpl
    def register_commands(cli):
        @cli.command()
        def hello():
            ...

Every hook is optional: a plugin implements the ones it needs.
"""

import pluggy

hookspec = pluggy.HookspecMarker("facekit")
hookimpl = pluggy.HookimplMarker("facekit")


@hookspec
def register_stages(register):
    """Register stage classes by calling ``register(cls)`` once per class.

    ``cls`` subclasses one of :class:`facekit.Source`, :class:`facekit.Detector`,
    :class:`facekit.Aligner`, :class:`facekit.Augmenter`, :class:`facekit.Sink` and sets
    ``name`` (the ``plugin:`` value used in pipeline configs) and ``Params``.
    """


@hookspec
def register_executors(register):
    """Register executor classes by calling ``register(cls)`` once per class.

    ``cls`` subclasses :class:`facekit.Executor` and sets ``name`` (the ``executor:
    {plugin: NAME}`` value of pipeline configs) and ``Params``. An executor runs shards of
    the pipeline (:class:`facekit.ShardWorker`) somewhere: in this process, in worker
    processes, on a cluster.
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``facekit`` command line: ``cli`` is its :class:`click.Group`;
    call ``cli.command()`` / ``cli.add_command`` on it (as simonw's ``llm`` does)."""
