"""HTTP API for support-desk systems: app.py (routes, SSE), keys.py (API keys), ratelimit.py."""

from rag_bot.api.app import AskRequest, AskResponse, Backend, create_app

__all__ = ["AskRequest", "AskResponse", "Backend", "create_app"]
