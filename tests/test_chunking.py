from __future__ import annotations

import pytest
from llama_index.core.utils import get_tokenizer

from ingest.chunking import ChunkingOptions, chunk_document, wants_semantic_split
from ingest.documents import LoadedDocument, Section
from rag_bot.embeddings import FastE5Embedder

CAT_EN = [
    "Our cat Murka sleeps on the windowsill most of the day.",
    "She likes to chase the red laser dot across the kitchen floor.",
    "In the evening the cat asks for tuna and purrs loudly.",
    "The vet says Murka is healthy but should eat less dry food.",
    "When guests arrive, the cat hides under the sofa.",
    "Her favourite toy is a small knitted mouse.",
    "Murka sheds a lot of fur in spring, so we brush her every day.",
    "At night the cat often sleeps at the foot of the bed.",
]
BACKUP_EN = [
    "The database backup runs every night at two o'clock.",
    "Full backups of PostgreSQL are kept for thirty days on the storage server.",
    "Incremental WAL archives are shipped every five minutes.",
    "A restore test is performed on a staging server each month.",
    "If a backup job fails, the on-call engineer receives an alert.",
    "Backup files are encrypted with a key stored in the vault.",
    "The retention policy is reviewed by the IT security team every quarter.",
    "Restoring the ERP database from a backup takes about forty minutes.",
]
LEAVE_RU = [
    "Ежегодный оплачиваемый отпуск сотрудника составляет двадцать восемь календарных дней.",
    "Отпуск можно разделить на части, но одна часть должна быть не меньше четырнадцати дней.",
    "График отпусков утверждается в декабре на следующий год.",
    "Заявление на отпуск подаётся руководителю за две недели.",
    "Отпускные выплачиваются не позднее чем за три дня до начала отпуска.",
    "Неиспользованный отпуск переносится на следующий год по согласованию с отделом кадров.",
    "При увольнении за неиспользованный отпуск выплачивается компенсация.",
    "Вопросы об отпуске можно задать специалисту отдела кадров.",
]
CAT_RU = [  # varied wording: the sentences share little vocabulary even within the topic
    "Наша кошка Мурка спит на подоконнике почти весь день.",
    "Она любит гоняться за красной точкой лазерной указки по кухне.",
    "Вечером кошка просит тунца и громко мурлычет.",
    "Ветеринар говорит, что Мурка здорова, но ей нужно есть меньше сухого корма.",
    "Когда приходят гости, кошка прячется под диваном.",
    "Её любимая игрушка — маленькая вязаная мышка.",
    "Весной Мурка сильно линяет, поэтому мы расчёсываем её каждый день.",
    "Ночью кошка часто спит в ногах на кровати.",
]
BACKUP_RU = [
    "Резервное копирование базы данных запускается каждую ночь в два часа.",
    "Полные резервные копии PostgreSQL хранятся тридцать дней на сервере хранения.",
    "Архивы журнала WAL копируются на резервный сервер каждые пять минут.",
    "Каждый месяц проверяется восстановление базы данных из резервной копии.",
    "Если задание резервного копирования падает, дежурный администратор получает оповещение.",
    "Файлы резервных копий шифруются ключом из хранилища секретов.",
    "Срок хранения резервных копий пересматривает служба информационной безопасности.",
    "Восстановление базы данных ERP из резервной копии занимает около сорока минут.",
]


def _document(text: str, fmt: str = "txt") -> LoadedDocument:
    return LoadedDocument("notes.txt", "Notes", "general", "internal", "en", "hash", [Section(text)], {"format": fmt})


@pytest.mark.parametrize(
    ("first", "second"),
    [(CAT_EN, BACKUP_EN), (LEAVE_RU, BACKUP_RU), (CAT_RU, BACKUP_RU)],
    ids=["en", "ru", "ru-varied-wording"],
)
def test_semantic_split_puts_the_boundary_between_two_topics(
    first: list[str], second: list[str], embedder: FastE5Embedder
) -> None:
    document = _document(" ".join(first + second))
    roomy = ChunkingOptions(chunk_size=1024, semantic_min_tokens=0)
    chunks = chunk_document(document, roomy, embedder=embedder)
    assert [c.text for c in chunks] == [" ".join(first), " ".join(second)]

    # With a small budget the topics are still never mixed, and no chunk is over the budget.
    tight = ChunkingOptions(chunk_size=64, overlap=0, semantic_min_tokens=0)
    chunks = chunk_document(document, tight, embedder=embedder)
    tokens = get_tokenizer()
    assert all(len(tokens(c.text)) <= 64 for c in chunks)
    assert all(not (any(s in c.text for s in first) and any(s in c.text for s in second)) for c in chunks)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_semantic_split_is_only_for_long_prose_without_headings() -> None:
    prose = " ".join(CAT_EN + BACKUP_EN)
    options = ChunkingOptions(semantic_min_tokens=100)
    assert wants_semantic_split(_document(prose), options)
    assert not wants_semantic_split(_document("# Pets\n\n" + prose), options)  # has structure
    assert not wants_semantic_split(_document(prose), ChunkingOptions(semantic_min_tokens=10_000))  # short
    assert not wants_semantic_split(_document(prose, fmt="csv"), options)  # tables are cut by rows
    assert not wants_semantic_split(_document(prose), ChunkingOptions(semantic=False, semantic_min_tokens=100))


@pytest.mark.parametrize("text", ["One sentence only.", "Two sentences here. And a second one."])
def test_semantic_split_of_a_text_too_short_to_compare_keeps_it_whole(text: str, embedder: FastE5Embedder) -> None:
    # Two sentences make two identical sentence groups: centred, both vectors are zero.
    chunks = chunk_document(_document(text), ChunkingOptions(semantic_min_tokens=0), embedder=embedder)
    assert [c.text for c in chunks] == [text]
