"""facekit's pluggy hook specifications (project name ``facekit``).

A plugin is a module found through an entry point in the ``facekit`` group. It implements

.. code-block:: python

    import facekit

    @facekit.hookimpl
    def register_stages(register):
        register(MyDetector)       # a subclass of facekit.Detector (or Source, Sink, ...)
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
