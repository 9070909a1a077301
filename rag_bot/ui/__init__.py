"""The Chainlit chat channel: thin handlers that run a turn and render it.

    chainlit_app.py  the @cl handlers: sign-in, profiles, a message -> TurnRunner -> rendered reply
    render.py        sources, SQL steps, tables and chart images as Chainlit elements
    auth.py          password or trusted-header sign-in, which profiles a user may use
    users.py         the users file (PBKDF2 hashes), `rag-bot users`
    data_layer.py    Chainlit's SQLAlchemy data layer on our PostgreSQL (threads, feedback)
    chat_history.py  its tables, answer metadata, thumbs-up -> solved examples
    export.py        rated answers -> chat-format JSONL for fine-tuning (`rag-bot export finetune`)
    mount.py         the chat mounted into the one ASGI app (rag_bot.serving)
    support_demo.py  the /support-demo page with the embeddable widget
"""
