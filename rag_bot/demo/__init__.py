"""The TechnoSnab demo company's database: what the rest of the bot may know about it.

Only constants live here, so production code (the analytics "today", the eval harness) can use the
demo's date range without importing the numpy/pandas generator:

    from rag_bot.demo import END            # the data end here; the demo's "today"
    from rag_bot.demo.load import load_demo_database   # `rag-bot demo load`
    from rag_bot.demo.data import generate_demo_data   # the seeded generator itself
"""

from __future__ import annotations

from datetime import date

# Bump when the generated data change: an existing database with another version is reloaded.
GENERATOR_VERSION = 1
START = date(2021, 1, 1)
END = date(2025, 12, 31)  # the data end here; eval "today" is this date (see knowledge_base/db/README.md)

# Load order respects foreign keys.
TABLES: tuple[str, ...] = (
    "regions",
    "offices",
    "departments",
    "employees",
    "customers",
    "product_categories",
    "products",
    "orders",
    "order_items",
    "invoices",
    "payments",
    "returns",
    "support_tickets",
    "sales_targets",
)

__all__ = ["END", "GENERATOR_VERSION", "START", "TABLES"]
