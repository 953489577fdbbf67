//! pg_catalog built from Shoal's own metadata: OIDs that agree between relations and survive a
//! restart, primary keys in pg_index and pg_constraint, column types with their modifiers,
//! sizes and row counts from storage, and a transaction block's private DDL.

use shoal_tests::{row, texts, Node};

/// The single value of a one-row, one-column query.
async fn value(c: &tokio_postgres::Client, sql: &str) -> Option<String> {
    let rows = texts(c, sql).await;
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_relations_describe_tables_keys_and_columns() {
    let mut node = Node::start();
    let c = node.connect().await;
    c.batch_execute(
        "create table accounts (id int primary key, owner varchar(20) not null, \
         balance numeric(10,2) default 0, note text)",
    )
    .await
    .unwrap();
    let oid = value(&c, "select 'accounts'::regclass::oid").await.unwrap();
    assert_eq!(
        value(
            &c,
            "select oid from pg_class where relname = 'accounts' and relkind = 'r'"
        )
        .await,
        Some(oid.clone())
    );
    // Built-in namespaces and relations carry PostgreSQL's OIDs.
    assert_eq!(
        texts(&c, "select nspname, oid from pg_namespace where nspname in ('pg_catalog', 'public') order by 1").await,
        vec![row(&["pg_catalog", "11"]), row(&["public", "2200"])]
    );
    assert_eq!(
        value(&c, "select oid from pg_class where relname = 'pg_class'").await,
        Some("1259".into())
    );

    let columns = texts(
        &c,
        &format!(
            "select attname, format_type(atttypid, atttypmod), attnotnull, atthasdef \
             from pg_attribute where attrelid = {oid} and attnum > 0 order by attnum"
        ),
    )
    .await;
    assert_eq!(
        columns,
        vec![
            row(&["id", "integer", "t", "f"]),
            row(&["owner", "character varying(20)", "t", "f"]),
            row(&["balance", "numeric(10,2)", "f", "t"]),
            row(&["note", "text", "f", "f"]),
        ]
    );

    let index = texts(
        &c,
        &format!(
            "select c.relname, i.indisprimary, i.indisunique, i.indkey, \
             pg_get_indexdef(i.indexrelid) \
             from pg_index i join pg_class c on c.oid = i.indexrelid where i.indrelid = {oid}"
        ),
    )
    .await;
    assert_eq!(
        index,
        vec![row(&[
            "accounts_pkey",
            "t",
            "t",
            "1",
            "CREATE UNIQUE INDEX accounts_pkey ON public.accounts USING btree (id)"
        ])]
    );
    let constraint = texts(
        &c,
        &format!(
            "select conname, contype, conkey, pg_get_constraintdef(oid) \
             from pg_constraint where conrelid = {oid}"
        ),
    )
    .await;
    assert_eq!(
        constraint,
        vec![row(&["accounts_pkey", "p", "{1}", "PRIMARY KEY (id)"])]
    );
    // The index name is taken in the schema, as in PostgreSQL.
    let taken = c.batch_execute("create table accounts_pkey (a int)").await;
    assert_eq!(
        taken.unwrap_err().code(),
        Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE)
    );

    // Sizes and row counts come from storage.
    assert_eq!(
        value(&c, "select pg_relation_size('accounts')").await,
        Some("0".into())
    );
    c.batch_execute(
        "insert into accounts select cast(value as int) as id, 'owner ' || value as owner, \
         value as balance, null from generate_series(1, 500) as s(value)",
    )
    .await
    .unwrap();
    let size: i64 = value(&c, "select pg_total_relation_size('accounts')")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 500 * 10, "500 rows take more than {size} bytes");
    c.batch_execute("delete from accounts where id > 400")
        .await
        .unwrap();
    assert_eq!(
        value(
            &c,
            "select n_live_tup from pg_stat_user_tables where relname = 'accounts'"
        )
        .await,
        Some("400".into())
    );

    // The same OIDs after a restart.
    node.restart();
    let c = node.connect().await;
    assert_eq!(
        value(&c, "select 'accounts'::regclass::oid").await,
        Some(oid.clone())
    );
    assert_eq!(
        value(
            &c,
            "select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid \
             where i.indrelid = 'accounts'::regclass"
        )
        .await,
        Some("accounts_pkey".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocks_new_table_is_in_its_own_catalog_only() {
    let node = Node::start();
    let inside = node.connect().await;
    let outside = node.connect().await;
    inside
        .batch_execute("begin; create table drafts (k int primary key, v text)")
        .await
        .unwrap();
    let count = "select count(*) from pg_class where relname in ('drafts', 'drafts_pkey')";
    assert_eq!(value(&inside, count).await, Some("2".into()));
    assert_eq!(value(&outside, count).await, Some("0".into()));
    assert_eq!(
        value(
            &inside,
            "select count(*) from pg_attribute where attrelid = 'drafts'::regclass and attnum > 0"
        )
        .await,
        Some("2".into())
    );
    inside.batch_execute("rollback").await.unwrap();
    assert_eq!(value(&inside, count).await, Some("0".into()));
}

/// A result column of a reg type shows the object's name, as PostgreSQL prints it; the same
/// cast in a comparison stays an OID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reg_types_print_names_in_results() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute("create schema sales; create table sales.orders (id int primary key)")
        .await
        .unwrap();
    let rows = texts(
        &c,
        "select c.oid::regclass, c.relnamespace::regnamespace, 'pg_catalog.pg_class'::regclass, \
         23::regtype from pg_class c where c.relname = 'orders'",
    )
    .await;
    assert_eq!(
        rows,
        vec![row(&["sales.orders", "sales", "pg_class", "integer"])]
    );
    let joined = value(
        &c,
        "select count(*) from pg_attribute a join pg_class c on a.attrelid = c.oid::regclass \
         where c.oid = 'sales.orders'::regclass and a.attnum > 0",
    )
    .await;
    assert_eq!(joined.as_deref(), Some("1"));
}
