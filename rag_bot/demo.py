"""The TechnoSnab demo analytics database: schema, seeded data generator and loader.

The bot's SQL and chart answers are only testable against data whose totals never change, so the data
come from a numpy generator with a fixed seed rather than from a dump: the same version of this module
always produces byte-identical tables. Facts (regions, offices, departments, statuses...) agree with
knowledge_base/COMPANY.md; revenue and the other business definitions are in knowledge_base/db/README.md.

`load_demo_database()` is what `rag-bot demo load` calls: create the database, run schema.sql, COPY the
generated tables, ANALYZE, and create the read-only role the SQL runner connects as.
"""

# ruff: noqa: E501  (only the aligned reference tables under `# fmt: off` are long)

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
import pandas as pd
import psycopg
from numpy.typing import NDArray
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from rag_bot.errors import ConfigError, DatabaseUnavailable

logger = logging.getLogger(__name__)

# Bump when the generated data change: an existing database with another version is reloaded.
GENERATOR_VERSION = 1
SEED = 20_120_412  # TechnoSnab's founding date; any fixed value works
START = date(2021, 1, 1)
END = date(2025, 12, 31)  # the data end here; eval "today" is this date (see knowledge_base/db/README.md)
N_ORDERS = 40_000
N_CUSTOMERS = 3_000
N_TICKETS = 15_000

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "knowledge_base" / "db" / "schema.sql"

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

_MARKER = re.compile(r"rag_bot demo database; generator=(\d+); state=(\w+)")
# Identifiers end up in DDL; sql.Identifier quotes them, the pattern keeps them boring on purpose.
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class DemoLoadReport:
    """What `load_demo_database` did: rows per table, wall time, where the read-only role connects."""

    db_name: str
    rows: dict[str, int]
    seconds: float
    readonly_url: str
    reloaded: bool
    generator_version: int = GENERATOR_VERSION

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


# --------------------------------------------------------------------------------------------------
# Reference data (COMPANY.md)
# --------------------------------------------------------------------------------------------------

# fmt: off
# Reference data are kept in aligned tables for reading against COMPANY.md; the formatter would explode them.
REGIONS = [  # id, code, name_en, name_ru, country, customer share, cities
    (1, "CENTER", "Center", "Центр", "Russia", 0.34, ["Moscow", "Tula", "Yaroslavl", "Voronezh"]),
    (2, "NORTH_WEST", "North-West", "Северо-Запад", "Russia", 0.18, ["Saint Petersburg", "Kaliningrad", "Murmansk"]),
    (3, "VOLGA", "Volga", "Поволжье", "Russia", 0.14, ["Kazan", "Nizhny Novgorod", "Samara"]),
    (4, "URAL", "Ural", "Урал", "Russia", 0.12, ["Yekaterinburg", "Chelyabinsk", "Perm"]),
    (5, "SIBERIA", "Siberia", "Сибирь", "Russia", 0.10, ["Novosibirsk", "Krasnoyarsk", "Omsk"]),
    (6, "KZ", "Kazakhstan", "Казахстан", "Kazakhstan", 0.07, ["Almaty", "Astana"]),
    (7, "BALKANS", "Balkans", "Балканы", "Serbia", 0.05, ["Belgrade", "Novi Sad"]),
]
OFFICES = [  # id, city, city_ru, country, region_id, is_hq, opened_on, employee share
    (1, "Moscow", "Москва", "Russia", 1, True, date(2012, 4, 12), 0.50),
    (2, "Saint Petersburg", "Санкт-Петербург", "Russia", 2, False, date(2014, 3, 1), 0.15),
    (3, "Kazan", "Казань", "Russia", 3, False, date(2016, 9, 1), 0.08),
    (4, "Novosibirsk", "Новосибирск", "Russia", 5, False, date(2017, 5, 15), 0.08),
    (5, "Yekaterinburg", "Екатеринбург", "Russia", 4, False, date(2018, 2, 1), 0.08),
    (6, "Almaty", "Алматы", "Kazakhstan", 6, False, date(2019, 10, 1), 0.06),
    (7, "Belgrade", "Белград", "Serbia", 7, False, date(2022, 6, 1), 0.05),
]
DEPARTMENTS = [  # id, name_en, name_ru, head count, salary median RUB, titles
    (1, "Management", "Руководство", 12, 450_000, ["Director"]),
    (2, "Sales", "Продажи", 170, 140_000, ["Sales Manager", "Senior Sales Manager", "Key Account Manager"]),
    (3, "Support", "Поддержка", 80, 95_000, ["Support Engineer", "Senior Support Engineer"]),
    (4, "Finance", "Финансы", 30, 130_000, ["Accountant", "Financial Analyst", "Senior Accountant"]),
    (5, "HR", "Персонал", 18, 110_000, ["HR Specialist", "Recruiter"]),
    (6, "IT", "ИТ", 40, 190_000, ["System Administrator", "Developer", "DevOps Engineer"]),
    (7, "Logistics", "Логистика", 80, 85_000, ["Warehouse Operator", "Logistics Coordinator", "Driver"]),
    (8, "Marketing", "Маркетинг", 30, 120_000, ["Marketing Manager", "Content Manager", "Analyst"]),
]
N_TERMINATED = 40  # 460 people on record, about 420 employed (COMPANY.md)

# code, name_en, name_ru, price range RUB, cost ratio, quantity mean, models (* = business line), variants
CATEGORIES = [
    ("laptops", "Laptops", "Ноутбуки", (55_000, 150_000), 0.82, 1.5,
     ["Lenovo ThinkPad T14*", "Lenovo ThinkPad E14*", "HP ProBook 450*", "HP EliteBook 840*", "Dell Latitude 5440*",
      "ASUS ExpertBook B1*", "Huawei MateBook D16", "Acer Aspire 5", "ASUS VivoBook 15", "MSI Modern 14"],
     ["i5/8GB/256GB", "i5/16GB/512GB", "i7/16GB/512GB", "i7/32GB/1TB"]),
    ("desktops", "Desktops", "Настольные ПК", (40_000, 110_000), 0.80, 2.0,
     ["Lenovo ThinkCentre M70s", "HP ProDesk 400 G9", "Dell OptiPlex 7010", "Acer Veriton X", "iRU Office 310",
      "Aquarius Pro P30", "Lenovo IdeaCentre 3", "HP Pro Tower 290"],
     ["i3/8GB/256GB", "i5/16GB/512GB", "i7/16GB/1TB", "i7/32GB/1TB"]),
    ("monitors", "Monitors", "Мониторы", (12_000, 45_000), 0.78, 2.5,
     ["Dell P-series", "Philips 243V7", "Samsung S-series", "LG UltraFine", "AOC 24B2XH", "Iiyama ProLite",
      "Xiaomi Mi Monitor", "BenQ GW-series"],
     ['24" FHD', '27" QHD', '27" 4K', '34" UWQHD']),
    ("printers", "Printers & MFPs", "Принтеры и МФУ", (15_000, 90_000), 0.80, 0.5,
     ["HP LaserJet Pro M404dn", "HP LaserJet Pro MFP M428fdn", "Canon i-SENSYS MF445dw", "Kyocera ECOSYS M2040dn",
      "Kyocera ECOSYS P2335d", "Pantum BM5100ADW", "Xerox B215", "Brother DCP-L2560DW", "Epson L3250"],
     ["", "with extra tray", "with 3-year service pack"]),
    ("networking", "Networking", "Сетевое оборудование", (4_000, 120_000), 0.75, 1.5,
     ["MikroTik hAP ax3", "MikroTik CRS326-24G", "Cisco Catalyst 1000-24T", "TP-Link TL-SG1024D",
      "Ubiquiti UniFi U6 Lite", "Keenetic Ultra", "Eltex MES2324", "Huawei S5735-L24T4S"],
     ["", "kit of 2", "with rack mount"]),
    ("servers", "Servers & Storage", "Серверы и СХД", (280_000, 1_600_000), 0.85, 0.2,
     ["Dell PowerEdge R650", "Dell PowerEdge R750", "HPE ProLiant DL360 Gen10", "HPE ProLiant DL380 Gen10",
      "Lenovo ThinkSystem SR650", "Huawei FusionServer 2288H", "Synology RS1221+", "QNAP TS-873A",
      "Yadro Vegman S220"],
     ["base", "2xCPU/128GB", "2xCPU/256GB/8TB"]),
    ("peripherals", "Peripherals", "Периферия", (800, 14_000), 0.70, 4.0,
     ["Logitech MK270 keyboard+mouse", "Logitech M185 mouse", "Defender Accent keyboard", "A4Tech Fstyler set",
      "Jabra Evolve2 30 headset", "Logitech C920 webcam", "APC Back-UPS 650", "Lenovo USB-C Dock",
      "HP USB-C Dock G5", "Sven SPS speakers"],
     ["", "black", "grey"]),
    ("furniture", "Office furniture", "Офисная мебель", (6_000, 55_000), 0.65, 3.0,
     ["Бюрократ CH-868 chair", "Метта SU-B-8 chair", "Riva desk 140", "Riva desk 160", "Skyland Imago cabinet",
      "Skyland Imago pedestal", "Ergostol lift desk", "Chairman 696 chair"],
     ["", "white", "oak"]),
    ("consumables", "Consumables", "Расходные материалы", (500, 11_000), 0.60, 8.0,
     ["HP 59A toner", "Kyocera TK-1170 toner", "Canon 057 cartridge", "SvetoCopy A4 paper 500 sheets",
      "Brother TN-2375 toner", "Pantum TL-420X toner", "Xerox 106R04348 toner", "Epson 103 ink set"],
     ["", "2-pack", "10-pack"]),
    ("software", "Software licences", "Лицензии ПО", (3_000, 60_000), 0.55, 10.0,
     ["Microsoft 365 Business Standard", "Kaspersky Endpoint Security", "1C:Бухгалтерия 8 ПРОФ",
      "МойОфис Стандартный", "Astra Linux Special Edition", "Windows 11 Pro", "Р7-Офис Профессиональный",
      "Dr.Web Desktop Security Suite"],
     ["1 year", "3 years"]),
]
NEVER_SOLD_SKU = "SRV-0999"  # edge case: launched in the last week of data, no orders yet

FIRST_M = ["Aleksandr", "Dmitry", "Maksim", "Sergey", "Andrey", "Aleksey", "Artyom", "Ilya", "Kirill", "Mikhail",
           "Nikita", "Pavel", "Roman", "Egor", "Ivan", "Oleg", "Vladimir", "Timur", "Arman", "Nikola"]
FIRST_F = ["Anna", "Maria", "Elena", "Olga", "Natalia", "Irina", "Tatiana", "Ekaterina", "Svetlana", "Yulia",
           "Anastasia", "Daria", "Polina", "Ksenia", "Alina", "Victoria", "Aigerim", "Milica"]
LAST = ["Ivanov", "Smirnov", "Kuznetsov", "Popov", "Vasilyev", "Petrov", "Sokolov", "Mikhailov", "Novikov",
        "Fedorov", "Morozov", "Volkov", "Alekseev", "Lebedev", "Semenov", "Egorov", "Pavlov", "Kozlov",
        "Stepanov", "Nikolaev", "Orlov", "Andreev", "Makarov", "Nikitin", "Zakharov", "Zaitsev", "Solovyov",
        "Borisov", "Yakovlev", "Grigoryev", "Romanov", "Vorobyov", "Sergeev", "Frolov", "Belov", "Gusev"]
CO_ROOTS = ["Вектор", "Альфа", "Гранит", "Север", "Интех", "Меридиан", "Ресурс", "Орион", "Прогресс", "Сфера",
            "Атлант", "Базис", "Восток", "Горизонт", "Дельта", "Импульс", "Каскад", "Квант", "Лидер", "Магистраль",
            "Нова", "Омега", "Партнёр", "Радуга", "Сигма", "Старт", "Техно", "Урал", "Феникс", "Центр", "Эталон",
            "Юнит", "Аврора", "Бриз", "Волна", "Гарант", "Держава", "Енисей", "Зенит", "Исток", "Кедр", "Луч",
            "Мир", "Нева", "Оптима", "Полюс", "Рубин", "Сапфир", "Титан", "Фарватер"]
CO_SUFFIXES = ["", "-Строй", "-Торг", "-Систем", "-Лаб", "-Пром", "-Сервис", "-Логистик", "-Групп", "-Инвест",
               "-Трейд", "-Консалт", "-Медиа", "-Энерго", "-Агро", "-Фарм", "-Транс", "-Девелопмент", "-Софт", "-Маркет"]
CITY_RU = {"Moscow": "Москва", "Tula": "Тула", "Yaroslavl": "Ярославль", "Voronezh": "Воронеж",
           "Saint Petersburg": "Санкт-Петербург", "Kaliningrad": "Калининград", "Murmansk": "Мурманск",
           "Kazan": "Казань", "Nizhny Novgorod": "Нижний Новгород", "Samara": "Самара",
           "Yekaterinburg": "Екатеринбург", "Chelyabinsk": "Челябинск", "Perm": "Пермь",
           "Novosibirsk": "Новосибирск", "Krasnoyarsk": "Красноярск", "Omsk": "Омск"}
PUBLIC_KINDS = ["ГБУЗ «Городская больница № {n}»", "МБОУ «Школа № {n}»", "ГАУ «МФЦ № {n}»",
                "ГБУ «Жилищник района № {n}»", "ФГБОУ ВО «Технический колледж № {n}»"]
SUBJECTS = {
    "delivery": ["Задержка доставки", "Delivery is late", "Не тот адрес доставки", "Повреждена упаковка"],
    "warranty": ["Не включается ноутбук", "Гарантийный ремонт монитора", "Printer jams paper", "Битые пиксели"],
    "returns": ["Возврат ноутбука", "Return request", "Не подошёл товар", "Возврат брака"],
    "billing": ["Неверная сумма в счёте", "Invoice copy needed", "Закрывающие документы", "Двойное списание"],
    "technical": ["Настройка МФУ по сети", "VPN не подключается", "Активация лицензии", "Driver installation"],
    "account": ["Доступ к личному кабинету", "Смена контактного лица", "Reset portal password", "Новый пользователь"],
}
_TRANSLIT = dict(zip("абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
                     ["a", "b", "v", "g", "d", "e", "e", "zh", "z", "i", "j", "k", "l", "m", "n", "o", "p", "r", "s",
                      "t", "u", "f", "h", "c", "ch", "sh", "sh", "", "y", "", "e", "ju", "ja"], strict=True))
# fmt: on


# --------------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------------


def _days(start: date, end: date) -> NDArray[Any]:
    return np.arange(np.datetime64(start), np.datetime64(end) + 1, dtype="datetime64[D]")


def _pick(rng: np.random.Generator, values: list[str], n: int, p: list[float] | None = None) -> NDArray[Any]:
    return np.asarray(values, dtype=object)[rng.choice(len(values), size=n, p=p)]


def _money(x: NDArray[Any]) -> NDArray[Any]:
    return np.round(np.asarray(x, dtype=float), 2)


def _generate_reference() -> dict[str, pd.DataFrame]:
    regions = pd.DataFrame(
        [r[:5] for r in REGIONS], columns=["region_id", "code", "name_en", "name_ru", "country"]
    )
    offices = pd.DataFrame(
        [o[:7] for o in OFFICES],
        columns=["office_id", "city", "city_ru", "country", "region_id", "is_headquarters", "opened_on"],
    )
    departments = pd.DataFrame([d[:3] for d in DEPARTMENTS], columns=["department_id", "name_en", "name_ru"])
    cats = pd.DataFrame(
        [(i + 1, c[0], c[1], c[2]) for i, c in enumerate(CATEGORIES)],
        columns=["category_id", "code", "name_en", "name_ru"],
    )
    return {"regions": regions, "offices": offices, "departments": departments, "product_categories": cats}


def _generate_employees(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    office_ids = [o[0] for o in OFFICES]
    office_p = np.array([o[7] for o in OFFICES])
    emp_id = 0
    for dep_id, name_en, _, count, median, titles in DEPARTMENTS:
        head_id = None
        for k in range(count):
            emp_id += 1
            is_head = k == 0
            if dep_id == 1 and is_head:
                title, manager = "Chief Executive Officer", None
            elif is_head:
                title, manager = f"Head of {name_en}", 1
            else:
                title, manager = titles[int(rng.integers(len(titles)))], head_id
            office = 1 if dep_id == 1 or is_head else int(rng.choice(office_ids, p=office_p))
            female = rng.random() < 0.45
            first = (
                FIRST_F[int(rng.integers(len(FIRST_F)))]
                if female
                else FIRST_M[int(rng.integers(len(FIRST_M)))]
            )
            last = LAST[int(rng.integers(len(LAST)))] + ("a" if female else "")
            hire = (
                date(2012, 4, 12)
                if emp_id == 1
                else date.fromordinal(
                    int(rng.integers(date(2012, 5, 1).toordinal(), date(2025, 11, 1).toordinal()))
                )
            )
            salary = median * (2.2 if is_head else 1.0) * float(rng.lognormal(0, 0.18))
            rows.append(
                (
                    emp_id,
                    first,
                    last,
                    f"{first}.{last}.{emp_id}".lower() + "@technosnab.ru",
                    dep_id,
                    office,
                    manager,
                    title,
                    hire,
                    None,
                    round(salary / 500) * 500.0,
                )
            )
            if is_head:
                head_id = emp_id
    df = pd.DataFrame(
        rows,
        columns=[
            "employee_id",
            "first_name",
            "last_name",
            "email",
            "department_id",
            "office_id",
            "manager_id",
            "job_title",
            "hire_date",
            "termination_date",
            "monthly_salary",
        ],
    )
    # Terminated people are never heads; they left some time after being hired.
    candidates = df.index[~df["job_title"].str.startswith(("Head of", "Chief"))]
    gone = rng.choice(candidates, size=N_TERMINATED, replace=False)
    hire_ord = df.loc[gone, "hire_date"].map(date.toordinal).to_numpy()
    lo = np.maximum(hire_ord + 90, date(2019, 1, 1).toordinal())
    term = [date.fromordinal(int(rng.integers(min(a, END.toordinal() - 1), END.toordinal()))) for a in lo]
    df["termination_date"] = df["termination_date"].astype(object)
    df.loc[gone, "termination_date"] = pd.Series(term, index=gone, dtype=object)
    df["manager_id"] = df["manager_id"].astype("Int64")
    return df


def _generate_customers(rng: np.random.Generator, employees: pd.DataFrame) -> pd.DataFrame:
    region_ids = np.array([r[0] for r in REGIONS])
    region = rng.choice(region_ids, size=N_CUSTOMERS, p=[r[5] for r in REGIONS])
    segment = _pick(rng, ["SMB", "Enterprise", "Public sector"], N_CUSTOMERS, [0.68, 0.12, 0.20])
    commercial = iter(rng.permutation([(r, s, f) for r in CO_ROOTS for s in CO_SUFFIXES for f in range(3)]))
    names, cities = [], []
    public_seen: set[str] = set()
    for i in range(N_CUSTOMERS):
        reg = REGIONS[region[i] - 1]
        city = reg[6][int(rng.choice(len(reg[6]), p=_city_weights(len(reg[6]))))]
        cities.append(city)
        if segment[i] == "Public sector" and reg[4] == "Russia":
            while True:
                name = PUBLIC_KINDS[int(rng.integers(len(PUBLIC_KINDS)))].format(n=int(rng.integers(1, 400)))
                name = f"{name}, г. {CITY_RU[city]}"
                if name not in public_seen:
                    public_seen.add(name)
                    break
        else:
            # Each (root, suffix, form) is used once and the form picks the prefix, so names are unique.
            root, suffix, form = next(commercial)
            core = ["", "ТД ", "ГК "][int(form)] + root + suffix
            if reg[4] == "Kazakhstan":
                name = f"ТОО «{core}»"
            elif reg[4] == "Serbia":
                name = f"{_latin(core)} d.o.o."
            elif segment[i] == "Enterprise":
                name = f"{'ПАО' if int(form) == 2 else 'АО'} «{core}»"
            else:
                name = f"ООО «{core}»"
        names.append(name)
    # Unique tax ids: 10 digits in Russia, 12 (BIN) in Kazakhstan, 9 (PIB) in Serbia.
    inn_base = 10**8 + rng.choice(9 * 10**8, size=N_CUSTOMERS, replace=False)
    inn = [
        f"{b}{i % 10}" if region[i] <= 5 else (f"{b}{i % 100:03d}" if region[i] == 6 else f"{b}")
        for i, b in enumerate(inn_base)
    ]
    # Account managers: an employed sales person from an office of the customer's region when there is one.
    sales = employees[(employees["department_id"] == 2) & employees["termination_date"].isna()]
    office_region = {o[0]: o[4] for o in OFFICES}
    by_region = {
        r: sales.loc[sales["office_id"].map(office_region) == r, "employee_id"].to_numpy() for r in region_ids
    }
    all_sales = sales["employee_id"].to_numpy()
    manager = [int(rng.choice(by_region[r] if len(by_region[r]) else all_sales)) for r in region]
    manager_s = pd.Series(manager, dtype="Int64")
    manager_s[rng.random(N_CUSTOMERS) < 0.03] = pd.NA
    email = pd.Series([f"info{i + 1}@client{i + 1}.example" for i in range(N_CUSTOMERS)], dtype=object)
    email[rng.random(N_CUSTOMERS) < 0.05] = None
    phone = pd.Series(
        [
            f"+7 9{int(x):02d} {int(y):03d}-{int(z):02d}-{int(w):02d}"
            for x, y, z, w in rng.integers(0, [100, 1000, 100, 100], size=(N_CUSTOMERS, 4))
        ],
        dtype=object,
    )
    phone[rng.random(N_CUSTOMERS) < 0.10] = None
    return pd.DataFrame(
        {
            "customer_id": np.arange(1, N_CUSTOMERS + 1),
            "name": names,
            "inn": inn,
            "segment": segment,
            "region_id": region,
            "city": cities,
            "account_manager_id": manager_s,
            "email": email,
            "phone": phone,
            "created_on": None,  # filled from the first order
        }
    )


def _city_weights(n: int) -> list[float]:
    w = np.array([0.6] + [0.4 / (n - 1)] * (n - 1)) if n > 1 else np.array([1.0])
    return list(w / w.sum())


def _latin(text: str) -> str:
    out = "".join(
        _TRANSLIT.get(ch.lower(), ch) if ch.islower() else _TRANSLIT.get(ch.lower(), ch).capitalize()
        for ch in text
    )
    return out.replace("-", " ")


def _generate_products(rng: np.random.Generator) -> tuple[pd.DataFrame, NDArray[Any]]:
    """Products plus a hidden discontinuation date per product (not stored, used to stop its sales)."""
    rows, stop = [], []
    pid = 0
    for cat_id, (code, _, _, (lo, hi), cost_ratio, _, models, variants) in enumerate(CATEGORIES, start=1):
        for model in models:
            business = model.endswith("*")
            model = model.rstrip("*")
            base = float(rng.uniform(lo, hi))
            for v_idx, variant in enumerate(variants):
                pid += 1
                name = f"{model} {variant}".strip()
                brand = model.split()[0]
                price = round(base * (1 + 0.22 * v_idx) * float(rng.uniform(0.95, 1.05)) / 10) * 10.0
                cost = round(price * cost_ratio * float(rng.uniform(0.93, 1.05)), 2)
                warranty = (
                    36
                    if code == "servers" or business
                    else (0 if code in ("consumables", "software") else 12)
                )
                if rng.random() < 0.7:
                    launched = date.fromordinal(
                        int(rng.integers(date(2018, 1, 1).toordinal(), date(2021, 1, 1).toordinal()))
                    )
                else:
                    launched = date.fromordinal(
                        int(rng.integers(START.toordinal(), date(2025, 6, 1).toordinal()))
                    )
                rows.append(
                    (
                        pid,
                        f"{code[:3].upper()}-{pid:04d}",
                        name,
                        brand,
                        cat_id,
                        price,
                        cost,
                        warranty,
                        launched,
                        True,
                    )
                )
                stop.append(
                    np.datetime64("2100-01-01")
                    if rng.random() > 0.08
                    else np.datetime64(
                        date.fromordinal(
                            int(rng.integers(date(2023, 1, 1).toordinal(), date(2025, 1, 1).toordinal()))
                        )
                    )
                )
    # The never-sold edge case: a new storage system launched in the last days of the data.
    pid += 1
    rows.append(
        (
            pid,
            NEVER_SOLD_SKU,
            "Synology RS2423RP+ rack NAS",
            "Synology",
            6,
            489_990.0,
            421_000.0,
            36,
            date(2025, 12, 24),
            True,
        )
    )
    stop.append(np.datetime64("2100-01-01"))
    df = pd.DataFrame(
        rows,
        columns=[
            "product_id",
            "sku",
            "name",
            "brand",
            "category_id",
            "list_price",
            "unit_cost",
            "warranty_months",
            "launched_on",
            "is_active",
        ],
    )
    stop_arr = np.array(stop, dtype="datetime64[D]")
    df["is_active"] = stop_arr > np.datetime64(END)
    return df, stop_arr


def generate_demo_data(seed: int = SEED) -> dict[str, pd.DataFrame]:
    """Generate every table as a DataFrame, deterministically for a given seed (no clock, no I/O)."""
    rng = np.random.default_rng(seed)
    data = _generate_reference()
    employees = _generate_employees(rng)
    customers = _generate_customers(rng, employees)
    products, stop = _generate_products(rng)
    cat_of = products["category_id"].to_numpy()

    # --- orders: growth ~+8.5 %/year in volume (+3 % price drift gives ~+12 % revenue), Q4 peak, summer dip
    days = _days(START, END)
    month = days.astype("datetime64[M]").astype(int) % 12
    weekday = (days.astype(int) + 3) % 7  # 0 = Monday
    season = np.array([0.72, 0.85, 1.0, 0.97, 0.9, 0.8, 0.68, 0.72, 1.0, 1.08, 1.22, 1.45])[month]
    week = np.where(weekday < 5, 1.0, np.where(weekday == 5, 0.12, 0.04))
    growth = 1.085 ** ((days - days[0]).astype(int) / 365.25)
    p_day = season * week * growth
    order_day = np.sort(rng.choice(days, size=N_ORDERS, p=p_day / p_day.sum()))
    n = N_ORDERS

    seg = customers["segment"].to_numpy()
    activity = rng.lognormal(0, 1.0, N_CUSTOMERS) * np.select(
        [seg == "Enterprise", seg == "Public sector"], [4.0, 1.5], 1.0
    )
    silent = rng.choice(N_CUSTOMERS, size=120, replace=False)  # customers who never ordered
    activity[silent] = 0
    cust_idx = rng.choice(N_CUSTOMERS, size=n, p=activity / activity.sum())
    customer_id = cust_idx + 1
    cust_seg = seg[cust_idx]
    cust_region = customers["region_id"].to_numpy()[cust_idx]
    manager = customers["account_manager_id"].to_numpy(dtype=float, na_value=np.nan)[cust_idx]
    employee_id = pd.array(np.where(rng.random(n) < 0.1, np.nan, manager), dtype="Int64")  # ~10 % via portal

    age = (np.datetime64(END) - order_day).astype(int)
    u = rng.random(n)
    status = np.select(
        [u < 0.04, age <= 1, age <= 4, age <= 9],
        [
            "cancelled",
            np.where(u < 0.6, "new", "paid"),
            np.where(u < 0.5, "paid", "shipped"),
            np.where(u < 0.6, "shipped", "delivered"),
        ],
        np.where(u > 0.975, "returned", "delivered"),
    ).astype(object)
    foreign = cust_region >= 6
    ship_lag = rng.integers(1, 4, n)
    deliver_lag = np.where(foreign, rng.integers(7, 15, n), rng.integers(1, 8, n))
    shipped = order_day + ship_lag
    delivered = np.minimum(shipped + deliver_lag, np.datetime64(END))
    has_shipped = np.isin(status, ["shipped", "delivered", "returned"])
    has_delivered = np.isin(status, ["delivered", "returned"])
    shipped = np.where(has_shipped, np.minimum(shipped, np.datetime64(END)), np.datetime64("NaT"))
    delivered = np.where(has_delivered, delivered, np.datetime64("NaT"))

    # --- order items
    n_lines = 1 + rng.poisson(np.where(cust_seg == "Enterprise", 2.6, 1.8))
    n_lines = np.minimum(n_lines, 9)
    line_order = np.repeat(np.arange(n), n_lines)
    # Servers are few and expensive; without damping they would dominate revenue and its yearly noise.
    cat_weight = np.array([1.4, 1.0, 1.3, 0.8, 0.9, 0.12, 1.6, 0.7, 1.8, 1.0])
    popularity = rng.lognormal(0, 0.9, len(products)) * cat_weight[cat_of - 1]
    popularity[products["sku"].to_numpy() == NEVER_SOLD_SKU] = 0
    prod = rng.choice(len(products), size=len(line_order), p=popularity / popularity.sum())
    # A product can only be sold between its launch and its (hidden) discontinuation: redraw the others
    # from products that were on sale the whole period.
    launched = products["launched_on"].to_numpy(dtype="datetime64[D]")
    line_day = order_day[line_order]
    bad = (launched[prod] > line_day) | (stop[prod] <= line_day)
    evergreen = np.flatnonzero(
        (launched <= np.datetime64(START)) & (stop > np.datetime64(END)) & (popularity > 0)
    )
    prod[bad] = rng.choice(
        evergreen, size=int(bad.sum()), p=popularity[evergreen] / popularity[evergreen].sum()
    )
    items = pd.DataFrame({"order_idx": line_order, "product_idx": prod}).drop_duplicates(
        ["order_idx", "product_idx"]
    )
    items = items.sort_values(["order_idx", "product_idx"], kind="stable").reset_index(drop=True)
    oi, pi = items["order_idx"].to_numpy(), items["product_idx"].to_numpy()
    qty_mean = np.array([c[5] for c in CATEGORIES])[cat_of[pi] - 1]
    qty = 1 + rng.poisson(qty_mean * np.where(cust_seg[oi] == "Enterprise", 2.0, 1.0))
    years_from_now = (order_day[oi] - np.datetime64("2025-07-01")).astype(int) / 365.25
    unit_price = np.round(products["list_price"].to_numpy()[pi] * 1.03**years_from_now / 10) * 10
    order_discount = np.select(
        [cust_seg == "Enterprise", cust_seg == "Public sector"],
        [
            _pick(rng, ["0", "0.05", "0.10", "0.15"], n, [0.3, 0.3, 0.3, 0.1]).astype(float),
            _pick(rng, ["0", "0.07"], n, [0.5, 0.5]).astype(float),
        ],
        _pick(rng, ["0", "0.03", "0.05"], n, [0.85, 0.1, 0.05]).astype(float),
    )
    discount = order_discount[oi]
    line_net = qty * unit_price * (1 - discount)
    order_net = np.bincount(oi, weights=line_net, minlength=n)
    free = (cust_region <= 2) & (order_net > 50_000)
    delivery_cost = np.where(
        free, 0.0, np.where(foreign, 4_500.0, np.where(cust_region <= 2, 500.0, 1_500.0))
    )

    order_ids = np.arange(1, n + 1)
    year = order_day.astype("datetime64[Y]").astype(int) + 1970
    seq = pd.Series(year).groupby(year).cumcount().to_numpy() + 1
    data["orders"] = pd.DataFrame(
        {
            "order_id": order_ids,
            "order_number": [f"TS-{y}-{s:06d}" for y, s in zip(year, seq, strict=True)],
            "customer_id": customer_id,
            "employee_id": employee_id,
            "order_date": order_day,
            "status": status,
            "shipped_date": shipped,
            "delivered_date": delivered,
            "delivery_cost": delivery_cost,
        }
    )
    data["order_items"] = pd.DataFrame(
        {
            "order_item_id": np.arange(1, len(items) + 1),
            "order_id": oi + 1,
            "product_id": pi + 1,
            "quantity": qty,
            "unit_price": unit_price,
            "discount": discount,
        }
    )

    # created_on: some time before the customer's first order; silent customers signed up recently.
    first = pd.Series(order_day).groupby(cust_idx).min()
    created = np.full(N_CUSTOMERS, np.datetime64("NaT"), dtype="datetime64[D]")
    created[first.index.to_numpy()] = first.to_numpy().astype("datetime64[D]") - rng.integers(
        0, 400, len(first)
    )
    missing = np.isnat(created)
    created[missing] = np.datetime64("2024-01-01") + rng.integers(0, 700, int(missing.sum()))
    customers["created_on"] = np.maximum(created, np.datetime64("2012-06-01"))
    data["customers"] = customers
    data["employees"] = employees
    data["products"] = products

    data.update(_generate_finance(rng, data["orders"], cust_seg, cust_region, order_net + delivery_cost))
    data["returns"] = _generate_returns(rng, data["orders"], data["order_items"], line_net)
    data["support_tickets"] = _generate_tickets(rng, data["orders"], activity, employees)
    data["sales_targets"] = _generate_targets(order_day, status, cust_region, order_net)
    return {t: data[t] for t in TABLES}


def _generate_finance(
    rng: np.random.Generator,
    orders: pd.DataFrame,
    seg: NDArray[Any],
    region: NDArray[Any],
    total: NDArray[Any],
) -> dict[str, pd.DataFrame]:
    status = orders["status"].to_numpy()
    order_day = orders["order_date"].to_numpy(dtype="datetime64[D]")
    n = len(orders)
    end = np.datetime64(END)
    invoiced = (status != "new") & ((status != "cancelled") | (rng.random(n) < 0.5))
    idx = np.flatnonzero(invoiced)
    inv_day = np.minimum(order_day[idx] + rng.integers(0, 2, len(idx)), end)
    due = inv_day + np.where(seg[idx] == "SMB", 14, 30)
    pay_lag = np.where(seg[idx] == "SMB", rng.integers(0, 12, len(idx)), rng.integers(3, 45, len(idx)))
    pay_lag = np.where(status[idx] == "paid", 0, pay_lag)
    pay_day = inv_day + pay_lag
    bad_debt = (rng.random(len(idx)) < 0.006) & (status[idx] != "paid")
    paid = (pay_day <= end) & ~bad_debt & (status[idx] != "cancelled")
    inv_status = np.where(
        status[idx] == "cancelled", "void", np.where(paid, "paid", np.where(due < end, "overdue", "issued"))
    ).astype(object)
    # Exchange rates: a deterministic random walk, RUB per KZT and per RSD.
    days = _days(START, END)
    walk = np.cumsum(rng.normal(0, 0.004, (2, len(days))), axis=1)
    kzt = 0.165 * np.exp(walk[0])
    rsd = 0.78 * np.exp(walk[1])
    day_i = (inv_day - np.datetime64(START)).astype(int)
    currency = np.select([region[idx] == 6, region[idx] == 7], ["KZT", "RSD"], "RUB").astype(object)
    rate = np.round(np.select([currency == "KZT", currency == "RSD"], [kzt[day_i], rsd[day_i]], 1.0), 6)
    amount_rub = _money(total[idx])
    year = inv_day.astype("datetime64[Y]").astype(int) + 1970
    invoices = pd.DataFrame(
        {
            "invoice_id": np.arange(1, len(idx) + 1),
            "invoice_number": [
                f"INV-{y}-{i:06d}" for y, i in zip(year, orders["order_id"].to_numpy()[idx], strict=True)
            ],
            "order_id": idx + 1,
            "invoice_date": inv_day,
            "due_date": due,
            "currency": currency,
            "exchange_rate": rate,
            "amount_original": _money(amount_rub / rate),
            "amount_rub": amount_rub,
            "status": inv_status,
        }
    )
    pidx = np.flatnonzero(paid)
    split = rng.random(len(pidx)) < 0.15
    first_amt = np.where(split, _money(amount_rub[pidx] / 2), amount_rub[pidx])
    second_idx = pidx[split]
    second_day = np.minimum(pay_day[second_idx] + rng.integers(5, 21, len(second_idx)), end)
    inv_ids = np.concatenate([pidx, second_idx]) + 1
    pay_days = np.concatenate([pay_day[pidx], second_day])
    amounts = np.concatenate([first_amt, _money(amount_rub[second_idx] - first_amt[split])])
    cur = currency[np.concatenate([pidx, second_idx])]
    method = np.where(
        cur == "RUB",
        _pick(rng, ["bank_transfer", "sbp", "card"], len(inv_ids), [0.85, 0.08, 0.07]),
        "bank_transfer",
    ).astype(object)
    payments = pd.DataFrame(
        {"invoice_id": inv_ids, "payment_date": pay_days, "amount_rub": amounts, "method": method}
    )
    payments = payments.sort_values(["payment_date", "invoice_id"], kind="stable").reset_index(drop=True)
    payments.insert(0, "payment_id", np.arange(1, len(payments) + 1))
    return {"invoices": invoices, "payments": payments}


def _generate_returns(
    rng: np.random.Generator, orders: pd.DataFrame, items: pd.DataFrame, line_net: NDArray[Any]
) -> pd.DataFrame:
    status = orders["status"].to_numpy()
    delivered = orders["delivered_date"].to_numpy(dtype="datetime64[D]")
    oi = items["order_id"].to_numpy() - 1
    end = np.datetime64(END)
    whole = status[oi] == "returned"
    partial = (status[oi] == "delivered") & (rng.random(len(items)) < 0.013)
    idx = np.flatnonzero(whole | partial)
    k = len(idx)
    line_qty = items["quantity"].to_numpy()[idx]
    qty = np.where(whole[idx], line_qty, 1 + (rng.random(k) * line_qty).astype(int).clip(0, line_qty - 1))
    lag = np.where(whole[idx], rng.integers(1, 15, k), rng.integers(1, 22, k))
    ret_day = np.minimum(delivered[oi[idx]] + lag, end)
    reason = _pick(
        rng, ["defective", "wrong_item", "damaged_in_delivery", "not_needed"], k, [0.4, 0.2, 0.15, 0.25]
    )
    st = np.where(
        lag > 14,
        "rejected",  # outside the 14-day window
        np.where(end - ret_day < 5, "requested", np.where(end - ret_day < 12, "approved", "refunded")),
    ).astype(object)
    st = np.where(whole[idx] & (st == "rejected"), "refunded", st)
    refund = np.where(st == "refunded", _money(line_net[idx] * qty / line_qty), np.nan)
    return pd.DataFrame(
        {
            "return_id": np.arange(1, k + 1),
            "order_item_id": idx + 1,
            "return_date": ret_day,
            "quantity": qty,
            "reason": reason,
            "status": st,
            "refund_amount": refund,
        }
    )


def _generate_tickets(
    rng: np.random.Generator, orders: pd.DataFrame, activity: NDArray[Any], employees: pd.DataFrame
) -> pd.DataFrame:
    n = N_TICKETS
    end_ts = np.datetime64(END) + np.timedelta64(1, "D") - np.timedelta64(1, "m")
    cats = ["delivery", "warranty", "returns", "billing", "technical", "account"]
    category = _pick(rng, cats, n, [0.24, 0.16, 0.10, 0.16, 0.24, 0.10])
    with_order = np.isin(category, ["delivery", "warranty", "returns"]) | (rng.random(n) < 0.4)
    eligible = np.flatnonzero(orders["status"].to_numpy() != "new")
    o = rng.choice(eligible, size=n)
    order_day = orders["order_date"].to_numpy(dtype="datetime64[D]")[o]
    lag = np.select(
        [category == "delivery", category == "returns", category == "warranty"],
        [rng.integers(2, 12, n), rng.integers(3, 20, n), rng.integers(20, 600, n)],
        rng.integers(1, 90, n),
    )
    day_linked = order_day + lag
    days = _days(START, END)
    growth = 1.09 ** ((days - days[0]).astype(int) / 365.25)
    day_free = rng.choice(days, size=n, p=growth / growth.sum())
    day = np.where(with_order, day_linked, day_free)
    keep_day = day <= np.datetime64(END)
    day = np.where(keep_day, day, day_free)
    with_order &= keep_day
    minutes = rng.integers(8 * 60, 20 * 60, n)
    created = day.astype("datetime64[m]") + minutes.astype("timedelta64[m]")
    customer = np.where(
        with_order,
        orders["customer_id"].to_numpy()[o],
        rng.choice(len(activity), size=n, p=activity / activity.sum()) + 1,
    )
    priority = _pick(rng, ["low", "normal", "high", "urgent"], n, [0.2, 0.5, 0.22, 0.08])
    channel = _pick(rng, ["email", "phone", "chat", "portal"], n, [0.35, 0.25, 0.2, 0.2])
    scale = np.select(
        [priority == "urgent", priority == "high", priority == "normal"], [12.0, 60.0, 180.0], 480.0
    )
    first_resp = (
        created + rng.exponential(scale, n).astype(int).astype("timedelta64[m]") + np.timedelta64(2, "m")
    )
    resolve = first_resp + (rng.lognormal(np.log(scale * 8), 0.8, n)).astype(int).astype("timedelta64[m]")
    first_resp_v = np.where(first_resp <= end_ts, first_resp, np.datetime64("NaT"))
    done = resolve <= end_ts
    recent = (end_ts - resolve) < np.timedelta64(7, "D")
    status = np.where(
        done, np.where(recent, "resolved", "closed"), np.where(np.isnat(first_resp_v), "open", "in_progress")
    ).astype(object)
    support = employees.loc[(employees["department_id"] == 3), "employee_id"].to_numpy()
    assigned = pd.array(rng.choice(support, size=n), dtype="Int64")
    assigned[(status == "open") & (rng.random(n) < 0.6)] = pd.NA
    subjects = np.array(
        [SUBJECTS[c][int(i)] for c, i in zip(category, rng.integers(0, 4, n), strict=True)], dtype=object
    )
    order_id = pd.array(np.where(with_order, o + 1, 0), dtype="Int64")
    order_id[~with_order] = pd.NA
    df = pd.DataFrame(
        {
            "customer_id": customer,
            "order_id": order_id,
            "assigned_to": assigned,
            "category": category,
            "priority": priority,
            "channel": channel,
            "status": status,
            "subject": subjects,
            "created_at": created,
            "first_response_at": first_resp_v,
            "resolved_at": np.where(done, resolve, np.datetime64("NaT")),
        }
    )
    df = df.sort_values("created_at", kind="stable").reset_index(drop=True)
    df.insert(0, "ticket_id", np.arange(1, n + 1))
    return df


def _generate_targets(
    order_day: NDArray[Any], status: NDArray[Any], region: NDArray[Any], order_net: NDArray[Any]
) -> pd.DataFrame:
    """Targets per region and quarter: prior-year revenue of that quarter +12 % (COMPANY.md)."""
    counted = ~np.isin(status, ["cancelled", "returned"])
    year = order_day.astype("datetime64[Y]").astype(int) + 1970
    quarter = order_day.astype("datetime64[M]").astype(int) % 12 // 3 + 1
    rev = pd.DataFrame({"region_id": region, "year": year + 1, "quarter": quarter, "rev": order_net})[counted]
    t = rev.groupby(["region_id", "year", "quarter"], as_index=False)["rev"].sum()
    t = t[t["year"] <= END.year]
    t["target_amount"] = np.round(t["rev"] * 1.12 / 1000) * 1000
    return t[["region_id", "year", "quarter", "target_amount"]].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------------------------------


def readonly_url(admin_url: str, db_name: str, role: str, password: str | None = None) -> str:
    """The admin URL with the read-only role's credentials and the demo database: what the SQL runner uses."""
    params = conninfo_to_dict(_plain_url(admin_url))
    host = str(params.pop("host", "") or "")
    port = str(params.pop("port", "") or "")
    for key in ("user", "password", "dbname"):
        params.pop(key, None)
    userinfo = quote(role, safe="") + (":" + quote(password, safe="") if password else "")
    netloc = userinfo + "@"
    query = dict(sorted((k, str(v)) for k, v in params.items()))
    if host.startswith("/") or "," in host:
        query["host"] = host  # a unix socket directory cannot sit in the authority part
        if port:
            query["port"] = port
    else:
        netloc += host + (f":{port}" if port else "")
    return f"postgresql://{netloc}/{quote(db_name, safe='')}" + (f"?{urlencode(query)}" if query else "")


def _plain_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def _check_ident(name: str, what: str) -> None:
    if not _IDENT.match(name):
        raise ConfigError(f"The {what} name {name!r} is not a plain identifier; use letters, digits and '_'.")


def _connect(url: str, **kwargs: object) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(_plain_url(url), **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as err:
        raise DatabaseUnavailable(
            f"Cannot connect to PostgreSQL to load the demo database ({err.__class__.__name__}). "
            "Start it (the embedded server starts with `rag-bot serve`) or fix RAG_BOT_DATABASE_URL."
        ) from err


def _marker_state(admin: psycopg.Connection[Any], db_name: str) -> tuple[bool, int | None, str | None]:
    row = admin.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (db_name,)
    ).fetchone()
    if row is None:
        return False, None, None
    match = _MARKER.search(row[0] or "")
    return True, (int(match.group(1)) if match else None), (match.group(2) if match else None)


def _set_marker(conn: psycopg.Connection[Any], db_name: str, state: str) -> None:
    text = (
        f"TechnoSnab demo analytics data. rag_bot demo database; generator={GENERATOR_VERSION}; state={state}"
    )
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(db_name), sql.Literal(text)))


def _to_csv(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    out = df.copy()
    for col in out.columns:
        if out[col].dtype.kind == "M":
            fmt = "%Y-%m-%d" if col.endswith(("_date", "_on")) else "%Y-%m-%d %H:%M"
            out[col] = out[col].dt.strftime(fmt)
    # %.6f keeps money exact after its 2-decimal rounding and never writes 1e-05 notation.
    out.to_csv(buf, index=False, header=False, float_format="%.6f", na_rep="")
    return buf.getvalue().encode()


def _copy_table(conn: psycopg.Connection[Any], table: str, df: pd.DataFrame) -> None:
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, df.columns))
    )
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        copy.write(_to_csv(df))


def _ensure_readonly_role(admin_url: str, db_name: str, role: str, password: str | None) -> None:
    """LOGIN role that can read every table and nothing else; read-only by default as a second fence."""
    with _connect(admin_url, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        admin.execute(
            sql.SQL(
                verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                "NOBYPASSRLS PASSWORD {}"
            ).format(sql.Identifier(role), sql.Literal(password) if password else sql.SQL("NULL"))
        )
        for setting, value in (("default_transaction_read_only", "on"), ("statement_timeout", "30s")):
            admin.execute(
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                    sql.Identifier(role), sql.Identifier(db_name), sql.Identifier(setting), sql.Literal(value)
                )
            )
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db_name)))
        admin.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(db_name), sql.Identifier(role)
            )
        )
    with _connect(admin_url, dbname=db_name, autocommit=True) as conn:
        ident = sql.Identifier(role)
        conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(ident))
    from rag_bot.analytics.reader_role import harden_reader_role

    try:
        harden_reader_role(admin_url, role, dbname=db_name)  # the second wall: no dangerous built-ins
    except ConfigError as err:  # a CREATEDB + CREATEROLE admin cannot revoke built-ins; the guard still holds
        logger.warning("read-only role %s not hardened: %s", role, err)


def _count_rows(admin_url: str, db_name: str) -> dict[str, int]:
    with _connect(admin_url, dbname=db_name) as conn:
        return {
            t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]  # type: ignore[index]
            for t in TABLES
        }


def load_demo_database(
    admin_url: str,
    *,
    db_name: str = "company",
    readonly_role: str = "rag_bot_reader",
    readonly_password: str | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> DemoLoadReport:
    """Create and fill the TechnoSnab demo database; a no-op (but for the role) when it is already loaded.

    Args:
        admin_url: a superuser (or CREATEDB + CREATEROLE) URL on the server, any database.
        db_name: the demo database; kept apart from the vector store's database.
        readonly_role: LOGIN role the SQL runner uses: CONNECT, USAGE on public, SELECT on all tables.
        readonly_password: its password; None leaves it without one (fine for the embedded server's
            trust auth on a unix socket, not for a networked server).
        force: drop and reload even when the database is complete and of the current generator version.
        progress: called with one short line per step (the CLI echoes them).

    Returns:
        DemoLoadReport with exact row counts, wall time and the read-only URL.

    Raises:
        ConfigError: `db_name` exists but was not created by this loader (pass force to replace it).
        DatabaseUnavailable: the server cannot be reached.
    """
    _check_ident(db_name, "database")
    _check_ident(readonly_role, "role")
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    ro_url = readonly_url(admin_url, db_name, readonly_role, readonly_password)
    with _connect(admin_url, autocommit=True) as admin:
        exists, version, state = _marker_state(admin, db_name)
        if exists and not force and version == GENERATOR_VERSION and state == "complete":
            say(f"database {db_name} already loaded (generator {version}); use force to reload")
            _ensure_readonly_role(admin_url, db_name, readonly_role, readonly_password)
            rows = _count_rows(admin_url, db_name)
            return DemoLoadReport(db_name, rows, time.perf_counter() - t0, ro_url, reloaded=False)
        if exists and not force and version is None:
            raise ConfigError(
                f"Database {db_name!r} already exists and was not created by `rag-bot demo load`; "
                "choose another name or reload it with --force (this drops it)."
            )
        if exists:
            say(f"dropping database {db_name}")
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db_name)))
        say(f"creating database {db_name}")
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(db_name))
        )
        _set_marker(admin, db_name, "loading")

    say("generating data")
    data = generate_demo_data()
    with _connect(admin_url, dbname=db_name) as conn:
        say("creating tables")
        conn.execute(SCHEMA_FILE.read_text(encoding="utf-8"))  # type: ignore[arg-type]
        for table in TABLES:
            say(f"copying {table} ({len(data[table]):,} rows)")
            _copy_table(conn, table, data[table])
        conn.commit()
        say("analyzing")
        conn.execute("ANALYZE")
        conn.commit()
    say(f"granting read-only access to {readonly_role}")
    _ensure_readonly_role(admin_url, db_name, readonly_role, readonly_password)
    with _connect(admin_url, autocommit=True) as admin:
        _set_marker(admin, db_name, "complete")
    rows = _count_rows(admin_url, db_name)
    seconds = time.perf_counter() - t0
    logger.info("demo database %s loaded: %d rows in %.1f s", db_name, sum(rows.values()), seconds)
    return DemoLoadReport(db_name, rows, seconds, ro_url, reloaded=True)
