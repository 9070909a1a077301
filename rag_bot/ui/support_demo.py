"""The demo company's website with the support widget, served by the chat server at /support-demo.

The page (knowledge_base/demo_site/index.html) loads Chainlit's copilot script from this server and
mounts the widget. When the chat requires sign-in, a visitor without a session gets a guest token
that may open the copilot profile only; a signed-in employee keeps their own session.
"""

from __future__ import annotations

import html
import json
import logging

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from rag_bot.config import PROJECT_ROOT
from rag_bot.ui.auth import guest_user

logger = logging.getLogger(__name__)

DEMO_PAGE = PROJECT_ROOT / "knowledge_base" / "demo_site" / "index.html"
PATH = "/support-demo"


def render_demo_page(template: str, server: str, access_token: str | None) -> str:
    """Fill the page's placeholders; values are escaped for the <script> and attribute they land in."""

    def js(value: str | None) -> str:
        return json.dumps(value).replace("<", "\\u003c")

    return (template.replace("__CHAINLIT_SERVER_URL__", html.escape(server, quote=True))
            .replace("__CHAINLIT_SERVER__", js(server))
            .replace("__ACCESS_TOKEN__", js(access_token)))


def _has_session(request: Request) -> bool:
    from chainlit.auth import get_token_from_cookies
    from chainlit.auth.jwt import decode_jwt

    token = get_token_from_cookies(request.cookies)
    if not token:
        return False
    try:
        decode_jwt(token)
    except Exception:  # noqa: BLE001 - expired or foreign token: treat as no session
        return False
    return True


def add_demo_route(app: FastAPI, copilot_profile: str) -> None:
    """Serve the demo page from Chainlit's own app (idempotent: the app module may be reloaded)."""
    from chainlit.auth import create_jwt, require_login
    from chainlit.config import config

    path = config.run.root_path + PATH
    if any(getattr(r, "path", None) == path for r in app.router.routes):
        return

    async def support_demo(request: Request) -> HTMLResponse:
        token = None
        if require_login() and not _has_session(request):
            language = "en" if request.headers.get("accept-language", "").lower().startswith("en") else "ru"
            token = create_jwt(guest_user(copilot_profile, language))
        server = str(request.base_url).rstrip("/")
        page = render_demo_page(DEMO_PAGE.read_text(encoding="utf-8"), server, token)
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    app.add_api_route(path, support_demo, methods=["GET"], include_in_schema=False)
    # Chainlit's router answers every unknown GET with its UI page, so this route goes first.
    app.router.routes.insert(0, app.router.routes.pop())
