"""Mount the Chainlit chat on a FastAPI app (the one place outside chainlit_app.py that knows Chainlit).

Chainlit 2.x supports this with `chainlit.utils.mount_chainlit`; it mounts Chainlit's one global
app, so it can be done once per process. Mounted at "/", the chat, its socket.io endpoint and the
support widget's script (`/copilot/index.js`) keep the URLs they have under `chainlit run`.
Routes of the parent app must be added before mounting: a mount at "/" catches every other path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI

from rag_bot.config import PROJECT_ROOT

CHAINLIT_APP = Path(__file__).resolve().with_name("chainlit_app.py")
_mounted = False


def mount_chat(app: FastAPI, path: str = "/", *, cors_origins: Sequence[str] = ()) -> None:
    """Serve the Chainlit chat (rag_bot/ui/chainlit_app.py) under `path` of `app`.

    `cors_origins` replaces `allow_origins` of .chainlit/config.toml: Chainlit's CORS middleware
    allows credentials, so "*" would let any site call the chat with a signed-in user's cookie.
    """
    global _mounted
    if _mounted:
        raise RuntimeError("The Chainlit chat can be mounted once per process (Chainlit has one global app).")
    # Chainlit reads .chainlit/config.toml, chainlit.md and public/ from its app root, fixed when
    # chainlit.config is first imported: the project folder, whatever the current directory is.
    os.environ.setdefault("CHAINLIT_APP_ROOT", str(PROJECT_ROOT))
    from chainlit.config import config
    from chainlit.utils import mount_chainlit

    # In place: Chainlit's CORSMiddleware was registered at import with this very list object.
    config.project.allow_origins[:] = list(cors_origins)
    mount_chainlit(app=app, target=str(CHAINLIT_APP), path=path)
    _mounted = True
