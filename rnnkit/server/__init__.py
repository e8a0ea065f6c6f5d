"""The local web app: a JSON API (FastAPI, OpenAPI at ``/openapi.json``) and one page with four views.

``create_app(run_dirs, limits=Limits())`` builds the app; ``serve_main(run_dirs, host, port)`` runs it under
uvicorn (bound to 127.0.0.1 unless told otherwise).
"""

from rnnkit.server.app import Limits, create_app, serve_main

__all__ = ["Limits", "create_app", "serve_main"]
