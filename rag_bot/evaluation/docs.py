"""`rag-bot eval docs`: retrieval recall@k and MRR, per language, with an optional llama-index baseline.

Two inputs:
* `--squad FILE.json` (SQuAD format, e.g. XQuAD): every paragraph is indexed as one document in a
  fresh database; a hit is a retrieved chunk of the question's own paragraph. `--corpus OTHER.json`
  indexes another file instead and maps questions to its paragraphs by question id (XQuAD files are
  aligned by id), e.g. Russian questions over the English corpus.
* `--jsonl knowledge_base/eval/docs_qa.jsonl`: the demo knowledge base is ingested into a fresh
  database; a hit is a chunk of a gold document. For `expected: refuse` items (an internal answer
  asked by a public user) a hit is: nothing internal was returned.

`--baseline llamaindex` runs llama-index's plain `VectorStoreIndex` retriever (in-memory) over the
same texts with the same embedding vectors (one shared cache), and prints both side by side.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import psycopg
from tqdm import tqdm

from rag_bot.assistant.routing import Router
from rag_bot.config import Settings, get_settings
from rag_bot.documents.retrieval import RetrievalOptions, search_chunks
from rag_bot.embeddings import Embedder
from rag_bot.evaluation.common import (
    RESULTS_DIR,
    SPLITS,
    CachedEmbedder,
    build_eval_embedder,
    format_table,
    read_jsonl,
    select_split,
    write_json,
)
from rag_bot.profiles import DEFAULT_PROFILES_FILE, load_profiles
from rag_bot.prompts import detect_language
from rag_bot.store import ChunkRecord, DocumentRecord, VectorStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Passage:
    """One indexed unit: its key (what a hit is judged on), the text embedded, and its audience."""

    key: str
    title: str
    text: str
    audience: str = "public"
    domain: str = "squad"
    heading: str = ""
    ordinal: int = 0


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    language: str
    gold: frozenset[str]  # passage keys that count as a hit
    audience: str = "internal"
    refuse: bool = False  # hit = nothing internal returned
    domain: str | None = None  # the gold domain, when the set has one


# -- inputs ---------------------------------------------------------------------------------------


def _squad_paragraphs(path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(key, title, paragraph) in file order; key is '<article>:<paragraph>' position."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    return [
        (f"{a}:{p}", article.get("title", ""), paragraph)
        for a, article in enumerate(data)
        for p, paragraph in enumerate(article["paragraphs"])
    ]


def load_squad(questions_file: Path, corpus_file: Path | None = None) -> tuple[list[Passage], list[Question]]:
    corpus = _squad_paragraphs(corpus_file or questions_file)
    passages = [Passage(key=key, title=title, text=para["context"]) for key, title, para in corpus]
    key_of_question = {qa["id"]: key for key, _, para in corpus for qa in para["qas"]}
    questions: list[Question] = []
    missing = 0
    # One language per file: per-question detection mislabels questions that are mostly names.
    language = detect_language(
        " ".join(qa["question"] for _, _, para in _squad_paragraphs(questions_file) for qa in para["qas"])
    )
    for _, _, para in _squad_paragraphs(questions_file):
        for qa in para["qas"]:
            key = key_of_question.get(qa["id"])
            if key is None:
                missing += 1
                continue
            questions.append(Question(qa["id"], qa["question"], language, frozenset({key})))
    if missing:
        logger.warning("%d questions have no paragraph with the same id in %s; skipped", missing, corpus_file)
    if not questions:
        raise click.ClickException(f"No question of {questions_file} maps to a paragraph of {corpus_file}.")
    return passages, questions


def load_docs_qa(path: Path, docs_root: Path, split: str = "all", splits_file: Path | None = None) -> list[Question]:
    questions = []
    for item in select_split(read_jsonl(path), path, split, splits_file):
        questions.append(
            Question(
                id=item["id"],
                text=item["question"],
                language=item.get("language") or detect_language(item["question"]),
                gold=frozenset(str((docs_root / g).resolve()) for g in item["gold_docs"]),
                audience=item.get("audience_of_asker", "internal"),
                refuse=item.get("expected") == "refuse",
                domain=item.get("domain"),
            )
        )
    return questions


# -- databases ------------------------------------------------------------------------------------


@contextmanager
def fresh_store(settings: Settings, embedder: Embedder, admin_url: str | None = None) -> Iterator[VectorStore]:
    """A vector store in a new database on the configured/embedded server, dropped afterwards."""
    from rag_bot.db import admin_url as configured_admin_url
    from rag_bot.db import ensure_database, with_database

    admin = admin_url or configured_admin_url(settings)
    name = "rag_bot_eval_" + uuid.uuid4().hex[:10]
    ensure_database(admin, name)
    store = VectorStore(with_database(admin, name), embedder_name=embedder.name, dim=embedder.dim)
    try:
        store.migrate()
        yield store
    finally:
        store.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def index_passages(store: VectorStore, embedder: Embedder, passages: Sequence[Passage]) -> None:
    """One document per passage; the embedded text is 'title\\nparagraph', as ingestion does."""
    vectors = embedder.embed_passages([embedding_text(p) for p in passages])
    for passage, vector in zip(tqdm(passages, desc="index", unit="para"), vectors, strict=True):
        store.upsert_document(
            DocumentRecord(
                source=passage.key,
                title=passage.title,
                domain=passage.domain,
                audience=passage.audience,
                language=detect_language(passage.text),
                content_hash=passage.key,
            ),
            [ChunkRecord(text=passage.text, ordinal=0)],
            vector[None, :],
        )


def embedding_text(passage: Passage) -> str:
    from ingest.pipeline import embedding_text as ingest_embedding_text  # the ingest format, one definition

    return ingest_embedding_text(passage.title, passage.heading, passage.text)


def ingest_knowledge_base(store: VectorStore, embedder: Embedder, docs_root: Path) -> list[Passage]:
    """Run the real ingestion into `store`; returns the stored chunks as passages keyed by source."""
    from ingest.pipeline import sync_documents  # the CLI's ingestion entry point

    report = sync_documents(docs_root, store, embedder)
    if report.failed:
        logger.warning("ingest failures: %s", report.failed)
    rows = store.conn.execute(
        "SELECT d.source, d.title, c.heading, c.text, c.audience, c.domain, c.ordinal "
        "FROM chunks c JOIN documents d ON d.id = c.document_id ORDER BY d.source, c.ordinal"
    ).fetchall()
    return [
        Passage(key=r[0], title=r[1], heading=r[2], text=r[3], audience=r[4], domain=r[5], ordinal=r[6]) for r in rows
    ]


# -- retrieval runs -------------------------------------------------------------------------------

Retrieve = Callable[[Question, int], list[tuple[str, str]]]  # -> [(passage key, audience)] best first


def run_retrieval(name: str, questions: Sequence[Question], retrieve: Retrieve, ks: Sequence[int]) -> dict[str, Any]:
    depth = max(ks)
    records = []
    started = time.perf_counter()
    for q in tqdm(questions, desc=name, unit="q"):
        got = retrieve(q, depth)
        if q.refuse:
            rank = None if any(audience == "internal" for _, audience in got) else 1
        else:
            rank = next((i for i, (key, _) in enumerate(got, 1) if key in q.gold), None)
        records.append({"id": q.id, "language": q.language, "rank": rank, "retrieved": [k for k, _ in got[:5]]})
    elapsed = time.perf_counter() - started
    metrics = {"all": _metrics(records, ks)}
    for language in sorted({r["language"] for r in records}):
        metrics[language] = _metrics([r for r in records if r["language"] == language], ks)
    return {"system": name, "metrics": metrics, "seconds": round(elapsed, 2), "items": records}


def _metrics(records: Sequence[dict[str, Any]], ks: Sequence[int]) -> dict[str, float]:
    ranks = [r["rank"] for r in records]
    out: dict[str, float] = {"n": len(ranks)}
    for k in ks:
        out[f"recall@{k}"] = sum(1 for r in ranks if r is not None and r <= k) / len(ranks)
    out["mrr"] = sum(1.0 / r for r in ranks if r is not None and r <= max(ks)) / len(ranks)
    return out


def ours(store: VectorStore, embedder: Embedder, options: RetrievalOptions) -> Retrieve:
    def retrieve(q: Question, k: int) -> list[tuple[str, str]]:
        hits = search_chunks(q.text, store=store, embedder=embedder, audience=q.audience, top_k=k, options=options)
        return [(h.source, h.audience) for h in hits]

    return retrieve


def routed(store: VectorStore, embedder: Embedder, options: RetrievalOptions, router: Router, mode: str) -> Retrieve:
    """Retrieval after routing, as the assistant does it: "top1" searches the router's first domain,
    "routed" its domains (several when unsure); both then fall back to all domains when nothing is found."""

    def retrieve(q: Question, k: int) -> list[tuple[str, str]]:
        route = router.classify(q.text)
        domains = list(route.domains[:1] if mode == "top1" else route.domains) or None
        hits = search_chunks(q.text, store=store, embedder=embedder, audience=q.audience, domains=domains, top_k=k,
                             options=options, embedding=route.embedding)
        if not hits and domains:
            hits = search_chunks(q.text, store=store, embedder=embedder, audience=q.audience, top_k=k,
                                 options=options, embedding=route.embedding)
        return [(h.source, h.audience) for h in hits]

    return retrieve


def domain_accuracy(router: Router, questions: Sequence[Question]) -> dict[str, float]:
    """Top-1 domain accuracy and gold-domain-among-routed share over questions with a gold domain."""
    with_domain = [q for q in questions if q.domain and not q.refuse]
    routes = [router.classify(q.text) for q in with_domain]
    n = max(len(with_domain), 1)
    return {
        "n": len(with_domain),
        "top1": sum(r.domains[:1] == (q.domain,) for q, r in zip(with_domain, routes, strict=True)) / n,
        "in_routed": sum(q.domain in r.domains for q, r in zip(with_domain, routes, strict=True)) / n,
        "mean_domains": sum(len(r.domains) for r in routes) / n,
        "intent_docs": sum(r.intent == "docs" for r in routes) / n,
    }


def llamaindex_baseline(passages: Sequence[Passage], embedder: Embedder) -> Retrieve:
    """llama-index's plain VectorStoreIndex (SimpleVectorStore) with our embedder wrapped."""
    try:
        from llama_index.core import VectorStoreIndex
        from llama_index.core.schema import TextNode
        from llama_index.core.vector_stores import ExactMatchFilter, MetadataFilters

        from ingest.semantic import LlamaIndexEmbedding
    except ImportError as exc:
        raise click.ClickException("The baseline needs llama-index-core: `uv sync` installs it.") from exc

    nodes = [
        TextNode(
            text=embedding_text(p),
            id_=f"{p.key}#{p.ordinal}",
            metadata={"key": p.key, "audience": p.audience},
            excluded_embed_metadata_keys=["key", "audience"],
            excluded_llm_metadata_keys=["key", "audience"],
        )
        for p in passages
    ]
    index = VectorStoreIndex(nodes, embed_model=LlamaIndexEmbedding(embedder))

    def retrieve(q: Question, k: int) -> list[tuple[str, str]]:
        # Same audience rule as ours (plain metadata filter), so the comparison is about ranking.
        filters = None
        if q.audience == "public":
            filters = MetadataFilters(filters=[ExactMatchFilter(key="audience", value="public")])
        found = index.as_retriever(similarity_top_k=k, filters=filters).retrieve(q.text)
        return [(n.node.metadata["key"], n.node.metadata["audience"]) for n in found]

    return retrieve


# -- command --------------------------------------------------------------------------------------


def _parse_ks(value: str) -> list[int]:
    try:
        ks = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter("use comma-separated integers, e.g. 1,5,10") from None
    if not ks or ks[0] < 1:
        raise click.BadParameter("k must be positive")
    return ks


@click.command("docs")
@click.option(
    "--squad",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="SQuAD-format questions (and corpus, unless --corpus).",
)
@click.option(
    "--corpus",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="SQuAD-format corpus to index instead of --squad's paragraphs (aligned by question id).",
)
@click.option(
    "--jsonl",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="docs_qa.jsonl over the demo knowledge base.",
)
@click.option(
    "--docs-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Documents for --jsonl (default: the knowledge base's docs/).",
)
@click.option("--k", "ks", default="1,5,10", show_default=True, callback=lambda c, p, v: _parse_ks(v))
@click.option("--baseline", type=click.Choice(["none", "llamaindex"]), default="none", show_default=True)
@click.option(
    "--text-weight",
    type=float,
    default=RetrievalOptions.text_weight,
    show_default=True,
    help="Full-text weight in the fusion (0 = vector only).",
)
@click.option(
    "--text-scope",
    type=click.Choice(["candidates", "all"]),
    default=RetrievalOptions.text_scope,
    show_default=True,
    help="Full text re-ranks the vector candidates, or searches every chunk.",
)
@click.option(
    "--text-same-language/--text-any-language",
    default=RetrievalOptions.text_same_language,
    show_default=True,
    help="Full text ranks only chunks in the question's language, or every chunk.",
)
@click.option("--rrf-k", type=int, default=RetrievalOptions.rrf_k, show_default=True)
@click.option("--candidates", type=int, default=RetrievalOptions.candidates, show_default=True)
@click.option(
    "--embedder",
    "embedder_choice",
    type=click.Choice(["auto", "fast", "configured"]),
    default="auto",
    show_default=True,
    help="auto: FastE5 when it loads, else the configured embedder.",
)
@click.option(
    "--route",
    "route_profile",
    default=None,
    help="Also retrieve after routing with this bot profile (--jsonl only): top-1 domain and routed domains.",
)
@click.option(
    "--domain-coverage",
    type=float,
    default=None,
    help="Override router.domain_coverage for --route (0 = one domain, or two when close).",
)
@click.option(
    "--split",
    type=click.Choice(SPLITS),
    default="all",
    show_default=True,
    help="Part of a --jsonl set: tuning (tune on it), report (report it), all.",
)
@click.option(
    "--splits-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Committed ids of the parts (default: splits/<set>.json beside the JSONL).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON results (default bench/results/eval_docs[_<set>].json).",
)
def docs(
    squad: Path | None,
    corpus: Path | None,
    jsonl: Path | None,
    docs_root: Path | None,
    ks: list[int],
    baseline: str,
    text_weight: float,
    text_scope: str,
    text_same_language: bool,
    rrf_k: int,
    candidates: int,
    embedder_choice: str,
    route_profile: str | None,
    domain_coverage: float | None,
    split: str,
    splits_file: Path | None,
    out: Path | None,
) -> None:
    """Retrieval recall@k and MRR per language, optionally beside a llama-index baseline."""
    if (squad is None) == (jsonl is None):
        raise click.UsageError("Give exactly one of --squad FILE.json or --jsonl FILE.jsonl.")
    if squad is not None and split != "all":
        raise click.UsageError("--split applies to a --jsonl set; a SQuAD file is measured whole.")
    settings = get_settings()
    inner, label = build_eval_embedder(settings, embedder_choice)
    embedder = CachedEmbedder(inner, settings.state_dir / "eval_cache" / "docs_embeddings.npz")
    options = RetrievalOptions(
        candidates=candidates,
        rrf_k=rrf_k,
        text_weight=text_weight,
        text_scope=text_scope,  # type: ignore[arg-type]
        text_same_language=text_same_language,
    )
    runs = []
    with fresh_store(settings, embedder) as store:
        if squad is not None:
            passages, questions = load_squad(squad, corpus)
            index_passages(store, embedder, passages)
            set_name = squad.stem + (f" over {corpus.stem}" if corpus else "")
        else:
            assert jsonl is not None
            root = (docs_root or settings.knowledge_base_dir / "docs").resolve()
            questions = load_docs_qa(jsonl, root, split, splits_file)
            passages = ingest_knowledge_base(store, embedder, root)
            set_name = jsonl.stem + ("" if split == "all" else f" ({split})")
        embedder.save()
        runs.append(run_retrieval("rag_bot hybrid", questions, ours(store, embedder, options), ks))
        if baseline == "llamaindex":
            runs.append(run_retrieval("llama-index vector", questions, llamaindex_baseline(passages, embedder), ks))
        routing: dict[str, float] | None = None
        if route_profile is not None:
            if jsonl is None:
                raise click.UsageError("--route needs a --jsonl set (its questions carry gold domains).")
            config = load_profiles(DEFAULT_PROFILES_FILE)
            if domain_coverage is not None:
                router_config = config.router.model_copy(update={"domain_coverage": domain_coverage})
                config = config.model_copy(update={"router": router_config})
            bot = Router(config, config.profile(route_profile), embedder, relevance=None)
            routing = domain_accuracy(bot, questions)
            for mode in ("top1", "routed"):
                retrieve = routed(store, embedder, options, bot, mode)
                runs.append(run_retrieval(f"rag_bot {mode} domain", questions, retrieve, ks))
    embedder.save()
    if out is None:
        if jsonl is not None:
            suffix = "" if split == "all" else f"_{split}"
        else:
            suffix = "_" + set_name.replace(" over ", "_over_").replace(".", "_")
        out = RESULTS_DIR / f"eval_docs{suffix}.json"
    payload = {
        "kind": "docs",
        "set": set_name,
        "embedder": label,
        "passages": len(passages),
        "questions": len(questions),
        "options": options.__dict__,
        "ks": ks,
        "routing": routing,
        "domain_coverage": domain_coverage,
        "runs": runs,
    }
    write_json(out, payload)
    click.echo(f"{set_name}: {len(questions)} questions over {len(passages)} chunks; embedder: {label}")
    headers = ["system", "lang", "n", *(f"R@{k}" for k in ks), "MRR"]
    rows = []
    for run in runs:
        for language, m in run["metrics"].items():
            rows.append([run["system"], language, int(m["n"]), *(m[f"recall@{k}"] for k in ks), m["mrr"]])
    click.echo(format_table(headers, rows))
    if routing is not None:
        click.echo(f"routing ({route_profile}, fast path): " + ", ".join(f"{k} {v:.3f}" for k, v in routing.items()))
    click.echo(f"wrote {out}")


__all__ = ["Passage", "Question", "docs", "load_squad", "run_retrieval"]
