-- TechnoSnab («ТехноСнаб») demo analytics database.
-- Facts agree with knowledge_base/COMPANY.md; business definitions are in knowledge_base/db/README.md.
-- Loaded by rag_bot.demo.load_demo_database(); data come from a seeded generator, not from this file.
-- All amounts are numeric(14,2) in RUB unless a column says otherwise.

CREATE TABLE regions (
    region_id   smallint PRIMARY KEY,
    code        text NOT NULL UNIQUE,
    name_en     text NOT NULL UNIQUE,
    name_ru     text NOT NULL UNIQUE,
    country     text NOT NULL
);
COMMENT ON TABLE regions IS 'Sales regions. Every customer belongs to exactly one region; region of an order = region of its customer.';
COMMENT ON COLUMN regions.region_id IS 'Primary key.';
COMMENT ON COLUMN regions.code IS 'Short stable code, e.g. CENTER, NORTH_WEST, KZ.';
COMMENT ON COLUMN regions.name_en IS 'Region name in English, e.g. Center, North-West, Volga.';
COMMENT ON COLUMN regions.name_ru IS 'Название региона по-русски: Центр, Северо-Запад, Поволжье, Урал, Сибирь, Казахстан, Балканы.';
COMMENT ON COLUMN regions.country IS 'Country of the region: Russia, Kazakhstan or Serbia.';

CREATE TABLE offices (
    office_id        smallint PRIMARY KEY,
    city             text NOT NULL UNIQUE,
    city_ru          text NOT NULL,
    country          text NOT NULL,
    region_id        smallint NOT NULL REFERENCES regions (region_id),
    is_headquarters  boolean NOT NULL DEFAULT false,
    opened_on        date NOT NULL
);
COMMENT ON TABLE offices IS 'Company offices. Headquarters in Moscow; abroad: Almaty and Belgrade.';
COMMENT ON COLUMN offices.office_id IS 'Primary key.';
COMMENT ON COLUMN offices.city IS 'City in English, e.g. Moscow, Saint Petersburg.';
COMMENT ON COLUMN offices.city_ru IS 'Город по-русски, например Москва, Казань.';
COMMENT ON COLUMN offices.country IS 'Country of the office.';
COMMENT ON COLUMN offices.region_id IS 'Sales region the office serves (FK regions).';
COMMENT ON COLUMN offices.is_headquarters IS 'True only for the Moscow head office.';
COMMENT ON COLUMN offices.opened_on IS 'Date the office opened.';

CREATE TABLE departments (
    department_id  smallint PRIMARY KEY,
    name_en        text NOT NULL UNIQUE,
    name_ru        text NOT NULL UNIQUE
);
COMMENT ON TABLE departments IS 'Отделы компании: Sales, Support, Finance, HR, IT, Logistics, Marketing, Management.';
COMMENT ON COLUMN departments.department_id IS 'Primary key.';
COMMENT ON COLUMN departments.name_en IS 'Department name in English, e.g. Sales.';
COMMENT ON COLUMN departments.name_ru IS 'Название отдела по-русски, например Продажи.';

CREATE TABLE employees (
    employee_id       integer PRIMARY KEY,
    first_name        text NOT NULL,
    last_name         text NOT NULL,
    email             text NOT NULL UNIQUE,
    department_id     smallint NOT NULL REFERENCES departments (department_id),
    office_id         smallint NOT NULL REFERENCES offices (office_id),
    manager_id        integer REFERENCES employees (employee_id),
    job_title         text NOT NULL,
    hire_date         date NOT NULL,
    termination_date  date,
    monthly_salary    numeric(14,2) NOT NULL
);
COMMENT ON TABLE employees IS 'Сотрудники (текущие и уволенные). Текущий сотрудник: termination_date IS NULL. Home addresses and personal data are not stored.';
COMMENT ON COLUMN employees.employee_id IS 'Primary key.';
COMMENT ON COLUMN employees.first_name IS 'Имя (латиницей).';
COMMENT ON COLUMN employees.last_name IS 'Фамилия (латиницей).';
COMMENT ON COLUMN employees.email IS 'Work e-mail, unique.';
COMMENT ON COLUMN employees.department_id IS 'Department (FK departments).';
COMMENT ON COLUMN employees.office_id IS 'Office where the employee works (FK offices).';
COMMENT ON COLUMN employees.manager_id IS 'Direct manager (FK employees); NULL for the CEO.';
COMMENT ON COLUMN employees.job_title IS 'Job title in English, e.g. Sales Manager.';
COMMENT ON COLUMN employees.hire_date IS 'Дата приёма на работу.';
COMMENT ON COLUMN employees.termination_date IS 'Дата увольнения; NULL, если сотрудник работает.';
COMMENT ON COLUMN employees.monthly_salary IS 'Gross monthly salary, RUB (оклад до вычета НДФЛ).';

CREATE TABLE customers (
    customer_id         integer PRIMARY KEY,
    name                text NOT NULL,
    inn                 text NOT NULL UNIQUE,
    segment             text NOT NULL CHECK (segment IN ('SMB', 'Enterprise', 'Public sector')),
    region_id           smallint NOT NULL REFERENCES regions (region_id),
    city                text NOT NULL,
    account_manager_id  integer REFERENCES employees (employee_id),
    email               text,
    phone               text,
    created_on          date NOT NULL
);
COMMENT ON TABLE customers IS 'Клиенты: юридические лица (B2B). Some customers have never ordered.';
COMMENT ON COLUMN customers.customer_id IS 'Primary key.';
COMMENT ON COLUMN customers.name IS 'Company name, e.g. ООО «Вектор».';
COMMENT ON COLUMN customers.inn IS 'Tax id (ИНН / BIN / PIB), unique.';
COMMENT ON COLUMN customers.segment IS 'Сегмент клиента: SMB, Enterprise или Public sector.';
COMMENT ON COLUMN customers.region_id IS 'Sales region of the customer (FK regions).';
COMMENT ON COLUMN customers.city IS 'City of the customer''s main address.';
COMMENT ON COLUMN customers.account_manager_id IS 'Sales manager responsible for the customer (FK employees); NULL if unassigned.';
COMMENT ON COLUMN customers.email IS 'Contact e-mail; may be NULL.';
COMMENT ON COLUMN customers.phone IS 'Contact phone; may be NULL.';
COMMENT ON COLUMN customers.created_on IS 'Дата регистрации клиента.';

CREATE TABLE product_categories (
    category_id  smallint PRIMARY KEY,
    code         text NOT NULL UNIQUE,
    name_en      text NOT NULL UNIQUE,
    name_ru      text NOT NULL UNIQUE
);
COMMENT ON TABLE product_categories IS 'Товарные категории: ноутбуки, мониторы, принтеры и МФУ, расходные материалы и т. д.';
COMMENT ON COLUMN product_categories.category_id IS 'Primary key.';
COMMENT ON COLUMN product_categories.code IS 'Stable code, e.g. laptops, consumables.';
COMMENT ON COLUMN product_categories.name_en IS 'Category name in English, e.g. Printers & MFPs.';
COMMENT ON COLUMN product_categories.name_ru IS 'Название категории по-русски, например Ноутбуки.';

CREATE TABLE products (
    product_id       integer PRIMARY KEY,
    sku              text NOT NULL UNIQUE,
    name             text NOT NULL,
    brand            text NOT NULL,
    category_id      smallint NOT NULL REFERENCES product_categories (category_id),
    list_price       numeric(14,2) NOT NULL CHECK (list_price > 0),
    unit_cost        numeric(14,2) NOT NULL CHECK (unit_cost > 0),
    warranty_months  smallint NOT NULL,
    launched_on      date NOT NULL,
    is_active        boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE products IS 'Product catalogue. Prices are current list prices; the price actually charged is order_items.unit_price.';
COMMENT ON COLUMN products.product_id IS 'Primary key.';
COMMENT ON COLUMN products.sku IS 'Артикул (stock keeping unit), unique.';
COMMENT ON COLUMN products.name IS 'Product name, e.g. Lenovo ThinkPad T14 Gen 4.';
COMMENT ON COLUMN products.brand IS 'Manufacturer brand.';
COMMENT ON COLUMN products.category_id IS 'Product category (FK product_categories).';
COMMENT ON COLUMN products.list_price IS 'Current list price per unit, RUB incl. VAT.';
COMMENT ON COLUMN products.unit_cost IS 'Себестоимость единицы (закупочная цена), RUB; margin = unit_price*(1-discount) - unit_cost.';
COMMENT ON COLUMN products.warranty_months IS 'Warranty in months: 12 for equipment, 36 for servers and business-line laptops, 0 for consumables and software licences.';
COMMENT ON COLUMN products.launched_on IS 'Date the product entered the catalogue.';
COMMENT ON COLUMN products.is_active IS 'False for discontinued products.';

CREATE TABLE orders (
    order_id        integer PRIMARY KEY,
    order_number    text NOT NULL UNIQUE,
    customer_id     integer NOT NULL REFERENCES customers (customer_id),
    employee_id     integer REFERENCES employees (employee_id),
    order_date      date NOT NULL,
    status          text NOT NULL CHECK (status IN ('new', 'paid', 'shipped', 'delivered', 'cancelled', 'returned')),
    shipped_date    date,
    delivered_date  date,
    delivery_cost   numeric(14,2) NOT NULL DEFAULT 0
);
COMMENT ON TABLE orders IS 'Заказы клиентов. Revenue counts orders whose status is not cancelled or returned (see README).';
COMMENT ON COLUMN orders.order_id IS 'Primary key.';
COMMENT ON COLUMN orders.order_number IS 'Human-readable number, e.g. TS-2024-001234.';
COMMENT ON COLUMN orders.customer_id IS 'Customer (FK customers).';
COMMENT ON COLUMN orders.employee_id IS 'Sales manager who booked the order (FK employees); NULL for web-portal orders.';
COMMENT ON COLUMN orders.order_date IS 'Дата заказа; выручка относится к этой дате.';
COMMENT ON COLUMN orders.status IS 'Статус: new, paid, shipped, delivered, cancelled, returned.';
COMMENT ON COLUMN orders.shipped_date IS 'Date shipped; NULL if not shipped yet or cancelled.';
COMMENT ON COLUMN orders.delivered_date IS 'Date delivered; NULL if not delivered yet or cancelled.';
COMMENT ON COLUMN orders.delivery_cost IS 'Delivery charge billed to the customer, RUB (0 = free delivery); not part of revenue.';

CREATE TABLE order_items (
    order_item_id  integer PRIMARY KEY,
    order_id       integer NOT NULL REFERENCES orders (order_id),
    product_id     integer NOT NULL REFERENCES products (product_id),
    quantity       integer NOT NULL CHECK (quantity > 0),
    unit_price     numeric(14,2) NOT NULL,
    discount       numeric(4,3) NOT NULL DEFAULT 0 CHECK (discount >= 0 AND discount < 1),
    UNIQUE (order_id, product_id)
);
COMMENT ON TABLE order_items IS 'Строки заказа. Line revenue = quantity * unit_price * (1 - discount).';
COMMENT ON COLUMN order_items.order_item_id IS 'Primary key.';
COMMENT ON COLUMN order_items.order_id IS 'Order (FK orders).';
COMMENT ON COLUMN order_items.product_id IS 'Product (FK products).';
COMMENT ON COLUMN order_items.quantity IS 'Количество единиц.';
COMMENT ON COLUMN order_items.unit_price IS 'Price per unit charged in this order, RUB incl. VAT, before discount.';
COMMENT ON COLUMN order_items.discount IS 'Скидка как доля: 0.050 = 5 %.';

CREATE TABLE invoices (
    invoice_id       integer PRIMARY KEY,
    invoice_number   text NOT NULL UNIQUE,
    order_id         integer NOT NULL UNIQUE REFERENCES orders (order_id),
    invoice_date     date NOT NULL,
    due_date         date NOT NULL,
    currency         char(3) NOT NULL CHECK (currency IN ('RUB', 'KZT', 'RSD')),
    exchange_rate    numeric(12,6) NOT NULL,
    amount_original  numeric(14,2) NOT NULL,
    amount_rub       numeric(14,2) NOT NULL,
    status           text NOT NULL CHECK (status IN ('issued', 'paid', 'overdue', 'void'))
);
COMMENT ON TABLE invoices IS 'Счета: one per order. Kazakhstan and Balkans invoices are in KZT/RSD, converted to RUB at the invoice date.';
COMMENT ON COLUMN invoices.invoice_id IS 'Primary key.';
COMMENT ON COLUMN invoices.invoice_number IS 'Номер счёта, e.g. INV-2024-001234.';
COMMENT ON COLUMN invoices.order_id IS 'Invoiced order (FK orders), one invoice per order.';
COMMENT ON COLUMN invoices.invoice_date IS 'Дата выставления счёта.';
COMMENT ON COLUMN invoices.due_date IS 'Payment due date: 14 days for SMB, 30 days for Enterprise and Public sector.';
COMMENT ON COLUMN invoices.currency IS 'Invoice currency: RUB, KZT or RSD.';
COMMENT ON COLUMN invoices.exchange_rate IS 'RUB per one unit of currency at the invoice date (1 for RUB).';
COMMENT ON COLUMN invoices.amount_original IS 'Amount in the invoice currency.';
COMMENT ON COLUMN invoices.amount_rub IS 'Сумма счёта в рублях (goods + delivery), RUB.';
COMMENT ON COLUMN invoices.status IS 'issued (not yet due), paid, overdue (past due and unpaid), void (order cancelled).';

CREATE TABLE payments (
    payment_id    integer PRIMARY KEY,
    invoice_id    integer NOT NULL REFERENCES invoices (invoice_id),
    payment_date  date NOT NULL,
    amount_rub    numeric(14,2) NOT NULL CHECK (amount_rub > 0),
    method        text NOT NULL CHECK (method IN ('bank_transfer', 'card', 'sbp'))
);
COMMENT ON TABLE payments IS 'Оплаты по счетам; a paid invoice may be settled by one or two payments.';
COMMENT ON COLUMN payments.payment_id IS 'Primary key.';
COMMENT ON COLUMN payments.invoice_id IS 'Invoice paid (FK invoices).';
COMMENT ON COLUMN payments.payment_date IS 'Дата поступления оплаты.';
COMMENT ON COLUMN payments.amount_rub IS 'Paid amount in RUB.';
COMMENT ON COLUMN payments.method IS 'bank_transfer, card or sbp (Система быстрых платежей).';

CREATE TABLE returns (
    return_id      integer PRIMARY KEY,
    order_item_id  integer NOT NULL REFERENCES order_items (order_item_id),
    return_date    date NOT NULL,
    quantity       integer NOT NULL CHECK (quantity > 0),
    reason         text NOT NULL CHECK (reason IN ('defective', 'wrong_item', 'damaged_in_delivery', 'not_needed')),
    status         text NOT NULL CHECK (status IN ('requested', 'approved', 'rejected', 'refunded')),
    refund_amount  numeric(14,2)
);
COMMENT ON TABLE returns IS 'Возвраты товаров по строкам заказа (policy: 14 calendar days after delivery).';
COMMENT ON COLUMN returns.return_id IS 'Primary key.';
COMMENT ON COLUMN returns.order_item_id IS 'Returned order line (FK order_items).';
COMMENT ON COLUMN returns.return_date IS 'Дата заявки на возврат.';
COMMENT ON COLUMN returns.quantity IS 'Units returned (at most the line quantity).';
COMMENT ON COLUMN returns.reason IS 'Причина: defective, wrong_item, damaged_in_delivery, not_needed.';
COMMENT ON COLUMN returns.status IS 'requested, approved, rejected or refunded.';
COMMENT ON COLUMN returns.refund_amount IS 'Refunded amount, RUB; NULL unless status = refunded.';

CREATE TABLE support_tickets (
    ticket_id          integer PRIMARY KEY,
    customer_id        integer NOT NULL REFERENCES customers (customer_id),
    order_id           integer REFERENCES orders (order_id),
    assigned_to        integer REFERENCES employees (employee_id),
    category           text NOT NULL CHECK (category IN ('delivery', 'warranty', 'returns', 'billing', 'technical', 'account')),
    priority           text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    channel            text NOT NULL CHECK (channel IN ('email', 'phone', 'chat', 'portal')),
    status             text NOT NULL CHECK (status IN ('open', 'in_progress', 'resolved', 'closed')),
    subject            text NOT NULL,
    created_at         timestamp NOT NULL,
    first_response_at  timestamp,
    resolved_at        timestamp
);
COMMENT ON TABLE support_tickets IS 'Обращения в поддержку. Times are Moscow time (timestamp without time zone).';
COMMENT ON COLUMN support_tickets.ticket_id IS 'Primary key.';
COMMENT ON COLUMN support_tickets.customer_id IS 'Customer who opened the ticket (FK customers).';
COMMENT ON COLUMN support_tickets.order_id IS 'Related order (FK orders); NULL for tickets not about an order.';
COMMENT ON COLUMN support_tickets.assigned_to IS 'Support employee handling the ticket (FK employees); NULL if unassigned.';
COMMENT ON COLUMN support_tickets.category IS 'Категория: delivery, warranty, returns, billing, technical, account.';
COMMENT ON COLUMN support_tickets.priority IS 'Приоритет: low, normal, high, urgent.';
COMMENT ON COLUMN support_tickets.channel IS 'Канал: email, phone, chat, portal.';
COMMENT ON COLUMN support_tickets.status IS 'open, in_progress, resolved, closed.';
COMMENT ON COLUMN support_tickets.subject IS 'Short subject line.';
COMMENT ON COLUMN support_tickets.created_at IS 'When the ticket was opened.';
COMMENT ON COLUMN support_tickets.first_response_at IS 'First reply by support; NULL if not answered yet.';
COMMENT ON COLUMN support_tickets.resolved_at IS 'Время решения; NULL for open and in_progress tickets.';

CREATE TABLE sales_targets (
    region_id      smallint NOT NULL REFERENCES regions (region_id),
    year           smallint NOT NULL,
    quarter        smallint NOT NULL CHECK (quarter BETWEEN 1 AND 4),
    target_amount  numeric(14,2) NOT NULL,
    PRIMARY KEY (region_id, year, quarter)
);
COMMENT ON TABLE sales_targets IS 'План продаж (revenue target) per region and quarter, 2022-2025: prior-year revenue +12 %.';
COMMENT ON COLUMN sales_targets.region_id IS 'Sales region (FK regions).';
COMMENT ON COLUMN sales_targets.year IS 'Calendar year.';
COMMENT ON COLUMN sales_targets.quarter IS 'Calendar quarter 1-4.';
COMMENT ON COLUMN sales_targets.target_amount IS 'Целевая выручка за квартал, RUB.';

CREATE INDEX orders_customer_id_idx ON orders (customer_id);
CREATE INDEX orders_order_date_idx ON orders (order_date);
CREATE INDEX order_items_product_id_idx ON order_items (product_id);
CREATE INDEX payments_invoice_id_idx ON payments (invoice_id);
CREATE INDEX returns_order_item_id_idx ON returns (order_item_id);
CREATE INDEX support_tickets_customer_id_idx ON support_tickets (customer_id);
CREATE INDEX support_tickets_created_at_idx ON support_tickets (created_at);
