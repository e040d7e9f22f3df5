"""``cakfx studio``: a local web app to load, tweak, A/B, save and listen through a batch.

Start it from the command line (needs the ``studio`` extra)::

    cakfx studio loop.wav --report out/report.json

or from Python, e.g. to script it or serve it yourself::

    from cakfx.studio.app import Studio, create_app
    studio = Studio(files=["loop.wav"])
    app = create_app(studio)          # a Starlette ASGI app; every request needs studio.token

This package's ``__init__`` imports nothing heavy: the command is registered
without starlette or torch (see ``cakfx.studio.command``).
"""
