//! The device path over the wire, on a machine without a GPU: `SET shoal.gpu = on` runs the
//! device operators with the CPU reference behind them, so the rule, the fallbacks, EXPLAIN and
//! the errors are exercised here; with `auto` (the default) and no GPU the plan is untouched.
//! The same queries must answer exactly what the CPU plan answers.

use shoal_tests::{explain, texts, Node};

async fn sorted(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = texts(c, sql).await;
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_operators_answer_what_the_cpu_answers() {
    let node = Node::start();
    let c = node.connect().await;
    c.batch_execute(
        "create table readings (id bigint primary key, sensor int, value double precision, \
         taken date, amount numeric(12,2), label text); \
         insert into readings select i, cast(i % 7 as int), \
         case when i % 11 = 0 then null when i % 13 = 0 then cast('NaN' as double precision) \
         else i * 0.37 - 100 end, \
         date '2024-01-01' + cast(i % 40 as int), \
         case when i % 17 = 0 then null else i * 0.25 end, 'r' || i \
         from generate_series(1, 3000) as s(i)",
    )
    .await
    .unwrap();

    let show = texts(&c, "show shoal.gpu").await;
    assert_eq!(show[0][0].as_deref(), Some("auto"));
    let query = "select id, value * 2 + 1 as v, label from readings \
                 where sensor = 3 and (value > 10 or value is null)";
    // No GPU here: `auto` leaves the plan as DataFusion made it.
    assert!(
        !explain(&c, query).await.contains("Gpu"),
        "{}",
        explain(&c, query).await
    );

    let queries = [
        query,
        "select sensor, count(*), count(value), sum(amount), avg(value), max(taken), \
         min(id), sum(sensor) from readings where taken >= date '2024-01-10' group by sensor",
        "select count(*), sum(id), avg(amount) from readings where value < 0",
        "select taken - date '2024-01-01' as days, amount * 2 from readings \
         where not (id % 5 = 0) and amount is not null",
        // LIKE has no device form: the filter stays on the CPU, the aggregate above does not.
        "select sensor, count(*) from readings where label like 'r1%' group by sensor",
    ];
    let mut cpu = Vec::new();
    c.batch_execute("set shoal.gpu = off").await.unwrap();
    for sql in queries {
        assert!(!explain(&c, sql).await.contains("Gpu"));
        cpu.push(sorted(&c, sql).await);
    }
    c.batch_execute("set shoal.gpu = on").await.unwrap();
    for (sql, want) in queries.iter().zip(&cpu) {
        assert!(!want.is_empty(), "{sql}");
        assert_eq!(&sorted(&c, sql).await, want, "{sql}");
    }

    // A row limit pushed into a filter stays with DataFusion's operator.
    let limited = texts(&c, "select id from readings where value > 0 limit 5").await;
    assert_eq!(limited.len(), 5);
    let top = texts(
        &c,
        "select id, value * 2 from readings where value > 0 order by id desc limit 3",
    )
    .await;
    c.batch_execute("set shoal.gpu = off").await.unwrap();
    let top_cpu = texts(
        &c,
        "select id, value * 2 from readings where value > 0 order by id desc limit 3",
    )
    .await;
    c.batch_execute("set shoal.gpu = on").await.unwrap();
    assert_eq!(top, top_cpu);
    let top_plan = explain(
        &c,
        "select id, value from readings order by value desc limit 3",
    )
    .await;
    assert!(top_plan.contains("GpuTopNExec"), "{top_plan}");

    let fused = explain(&c, query).await;
    assert!(
        fused.contains("GpuFilterProjectExec: device=cpu-reference")
            && fused.contains("predicate=")
            && fused.contains("carried #"),
        "{fused}"
    );
    assert!(
        !fused.contains("FilterExec:"),
        "filter and projection fused: {fused}"
    );
    let grouped = explain(&c, queries[4]).await;
    assert!(
        grouped.contains("GpuPartialAggregateExec")
            && grouped.contains("GpuNotUsedExec: FilterExec stays on the CPU: the expression"),
        "{grouped}"
    );
    let analyzed = explain(&c, &format!("analyze {}", queries[1])).await;
    assert!(
        analyzed.contains("device_chunks=") && analyzed.contains("bytes_to_device="),
        "{analyzed}"
    );

    // The query's own errors keep their SQLSTATE on the device path.
    let divide = c
        .simple_query("select id / (sensor - sensor) from readings where id < 5")
        .await
        .unwrap_err();
    assert_eq!(divide.code().map(|s| s.code()), Some("22012"), "{divide:?}");
    let bad = c
        .batch_execute("set shoal.gpu = sometimes")
        .await
        .unwrap_err();
    assert_eq!(bad.code().map(|s| s.code()), Some("22023"), "{bad:?}");
}
