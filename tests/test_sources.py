"""Sources are shown by their path inside the knowledge base, never the server's absolute path."""

from __future__ import annotations

from pathlib import PurePath

from rag_bot.api.app import sources_of
from rag_bot.assistant.conversation import Route
from rag_bot.assistant.respond import Reply
from rag_bot.documents.retrieval import Citation
from rag_bot.documents.sources import display_source
from rag_bot.ui.render import citation_label, source_panel

ROOT = PurePath("/srv/bot/knowledge_base/docs")


def test_display_source_is_relative_to_the_documents_folder() -> None:
    assert display_source("/srv/bot/knowledge_base/docs/support/warranty.md", ROOT) == "support/warranty.md"
    assert display_source("/home/admin/private/notes.md", ROOT) == "notes.md"  # outside: the name alone
    assert display_source("https://example.com/faq", ROOT) == "https://example.com/faq"
    assert display_source("demo/support_tickets", ROOT) == "demo/support_tickets"  # schema documents
    assert display_source("/srv/bot/knowledge_base/docs/support/warranty.md", None) == "warranty.md"


def _reply() -> Reply:
    route = Route(intent="docs", domains=("support",), intent_confidence=1.0, domain_confidence=1.0, path="fast",
                  language="en")
    citation = Citation(number=1, title="Warranty", source=str(ROOT / "support" / "warranty.md"),
                        section="Warranty > Laptops", page=None, passage="Laptops: 24 months.", domain="support")
    return Reply(route=route, citations=[citation])


def test_api_and_chat_sources_show_title_and_relative_path() -> None:
    [source] = sources_of(_reply(), ROOT)
    assert (source.title, source.source) == ("Warranty", "support/warranty.md")

    [citation] = _reply().citations
    assert citation_label(citation).startswith("[1] Warranty")
    panel = source_panel(citation, ROOT)
    assert panel.endswith("— Warranty · `support/warranty.md`") and "/srv/" not in panel
