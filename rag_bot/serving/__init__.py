"""`rag-bot serve`: one ASGI app for every channel, behind its HTTP guards.

    app.py     the app: the HTTP API under /api/v1, /metrics, health, the Chainlit chat at /; run_server()
    guards.py  who may send the sign-in header (trusted proxies), who may read /metrics and the API docs

Typical use::

    from rag_bot.serving import run_server
    run_server(get_settings())
"""

from rag_bot.serving.app import OPS_PATHS, build_backend, check_startup_safety, create_server_app, guard_app, run_server

__all__ = ["OPS_PATHS", "build_backend", "check_startup_safety", "create_server_app", "guard_app", "run_server"]
