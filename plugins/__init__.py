"""facekit's built-in plugins.

Each module is a self-contained plugin, written as a third-party plugin package would be:
it imports only facekit's public API and is found through an entry point in the
``facekit`` group (see ``pyproject.toml``).
"""
