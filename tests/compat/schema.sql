-- The schema the compatibility checks run against, on Shoal and on PostgreSQL alike: the
-- tables and view the recorded client traffic (tests/compat/client_queries.json) refers to.
create table customers (
    id int primary key,
    name text not null,
    email varchar(100),
    score double precision,
    created_at timestamp
);
create schema sales;
create table sales.orders (
    id bigint primary key,
    customer_id int not null,
    total numeric(10, 2),
    placed_on date
);
create table things (id int primary key, m text, p text, d date, ms text);
create view v_orders as
    select o.id, c.name, o.total from sales.orders o join customers c on c.id = o.customer_id;
insert into customers values
    (1, 'Ada', 'ada@example.com', 9.5, '2024-01-02 03:04:05'),
    (2, 'Grace', null, 7.25, '2024-02-03 04:05:06'),
    (3, 'Linus', 'linus@example.com', null, null);
insert into sales.orders values
    (10, 1, 12.50, '2024-03-01'),
    (11, 1, 3.00, '2024-03-02'),
    (12, 2, 99.99, null);
insert into things values (1, 'm', 'p', '2024-01-01', 'ms');
