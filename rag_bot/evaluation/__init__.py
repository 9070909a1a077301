"""`rag-bot eval`: measurements of the retriever, the router and the SQL path (one module each)."""
