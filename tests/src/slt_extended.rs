//! A sqllogictest-rs database over the *extended* query protocol (Parse/Bind/Execute with
//! binary results, as tokio-postgres sends them), printing values as PostgreSQL's text output
//! would, like sqllogictest-rs's `postgres-extended` engine.

use async_trait::async_trait;
use chrono::{Duration, NaiveDate};
use sqllogictest::{DBOutput, DefaultColumnType};
use tokio_postgres::types::{FromSql, Kind, Type};

use crate::slt::DbError;

pub struct ExtendedDb {
    pub client: tokio_postgres::Client,
}

/// The raw binary value of any column, with its type.
struct Raw(Type, Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(ty.clone(), raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn be<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

fn pg_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid date")
}

fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        format!("{v}")
    }
}

/// NUMERIC's binary form: digit count, weight, sign, display scale, base-10000 digits.
fn numeric(b: &[u8]) -> String {
    let ndigits = i16::from_be_bytes(be(&b[0..])) as usize;
    let weight = i16::from_be_bytes(be(&b[2..])) as i32;
    let sign = u16::from_be_bytes(be(&b[4..]));
    let dscale = i16::from_be_bytes(be(&b[6..])) as usize;
    if sign == 0xC000 {
        return "NaN".into();
    }
    let digits: Vec<i32> = (0..ndigits)
        .map(|i| i16::from_be_bytes(be(&b[8 + 2 * i..])) as i32)
        .collect();
    let mut int_part = String::new();
    for w in 0..=weight.max(0) {
        let d = if weight >= 0 {
            digits.get(w as usize).copied().unwrap_or(0)
        } else {
            0
        };
        if int_part.is_empty() {
            int_part = d.to_string();
        } else {
            int_part.push_str(&format!("{d:04}"));
        }
    }
    if weight < 0 {
        int_part = "0".into();
    }
    let mut frac = String::new();
    let mut i = weight + 1;
    while frac.len() < dscale {
        let d = if i >= 0 {
            digits.get(i as usize).copied().unwrap_or(0)
        } else {
            0
        };
        frac.push_str(&format!("{d:04}"));
        i += 1;
    }
    frac.truncate(dscale);
    let neg = if sign == 0x4000 { "-" } else { "" };
    if dscale > 0 {
        format!("{neg}{int_part}.{frac}")
    } else {
        format!("{neg}{int_part}")
    }
}

fn scalar(ty: &Type, b: &[u8]) -> String {
    match *ty {
        Type::BOOL => if b[0] != 0 { "t" } else { "f" }.into(),
        Type::INT2 => i16::from_be_bytes(be(b)).to_string(),
        Type::INT4 => i32::from_be_bytes(be(b)).to_string(),
        Type::INT8 => i64::from_be_bytes(be(b)).to_string(),
        Type::FLOAT4 => float(f32::from_be_bytes(be(b)) as f64),
        Type::FLOAT8 => float(f64::from_be_bytes(be(b))),
        Type::NUMERIC => numeric(b),
        Type::DATE => (pg_epoch() + Duration::days(i32::from_be_bytes(be(b)) as i64))
            .format("%Y-%m-%d")
            .to_string(),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let micros = i64::from_be_bytes(be(b));
            let t =
                pg_epoch().and_hms_opt(0, 0, 0).expect("midnight") + Duration::microseconds(micros);
            let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
            let frac = micros.rem_euclid(1_000_000);
            if frac > 0 {
                s.push('.');
                s.push_str(format!("{frac:06}").trim_end_matches('0'));
            }
            if *ty == Type::TIMESTAMPTZ {
                format!("{s}+00")
            } else {
                s
            }
        }
        Type::TIME => {
            let micros = i64::from_be_bytes(be(b));
            let mut s = format!(
                "{:02}:{:02}:{:02}",
                micros / 3_600_000_000,
                micros / 60_000_000 % 60,
                micros / 1_000_000 % 60
            );
            let frac = micros % 1_000_000;
            if frac > 0 {
                s.push('.');
                s.push_str(format!("{frac:06}").trim_end_matches('0'));
            }
            s
        }
        Type::BYTEA => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("\\x{hex}")
        }
        Type::INTERVAL => {
            let micros = i64::from_be_bytes(be(b));
            let days = i32::from_be_bytes(be(&b[8..]));
            let months = i32::from_be_bytes(be(&b[12..]));
            interval(months, days, micros)
        }
        Type::JSONB => String::from_utf8_lossy(&b[1..]).into_owned(),
        Type::UUID if b.len() == 16 => {
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        }
        _ => String::from_utf8_lossy(b).into_owned(),
    }
}

/// PostgreSQL's `postgres` IntervalStyle: `1 year 2 mons 3 days 04:05:06.5`.
fn interval(months: i32, days: i32, micros: i64) -> String {
    let mut parts = Vec::new();
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n.abs() == 1 { "" } else { "s" });
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        parts.push(plural(years as i64, "year"));
    }
    if months != 0 {
        parts.push(plural(months as i64, "mon"));
    }
    if days != 0 {
        parts.push(plural(days as i64, "day"));
    }
    if micros != 0 || parts.is_empty() {
        let sign = if micros < 0 { "-" } else { "" };
        let m = micros.unsigned_abs();
        let mut t = format!(
            "{sign}{:02}:{:02}:{:02}",
            m / 3_600_000_000,
            m / 60_000_000 % 60,
            m / 1_000_000 % 60
        );
        if !m.is_multiple_of(1_000_000) {
            t.push('.');
            t.push_str(format!("{:06}", m % 1_000_000).trim_end_matches('0'));
        }
        parts.push(t);
    }
    parts.join(" ")
}

/// An array element as `array_out` writes it: quoted when empty, `NULL`, or holding quotes,
/// backslashes, braces, commas or blanks.
fn array_item(item: String) -> String {
    let special = |c: char| matches!(c, '"' | '\\' | '{' | '}' | ',') || c.is_ascii_whitespace();
    if item.is_empty() || item.eq_ignore_ascii_case("null") || item.contains(special) {
        format!("\"{}\"", item.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        item
    }
}

/// One-dimensional arrays: `{1,2,NULL}`.
fn array(element: &Type, b: &[u8]) -> String {
    let ndim = i32::from_be_bytes(be(b));
    if ndim == 0 {
        return "{}".into();
    }
    let len = i32::from_be_bytes(be(&b[12..])) as usize;
    let mut at = 12 + 8 * ndim as usize;
    let mut items = Vec::with_capacity(len);
    for _ in 0..len {
        let n = i32::from_be_bytes(be(&b[at..]));
        at += 4;
        if n < 0 {
            items.push("NULL".to_string());
        } else {
            items.push(array_item(scalar(element, &b[at..at + n as usize])));
            at += n as usize;
        }
    }
    format!("{{{}}}", items.join(","))
}

fn text(value: Option<Raw>) -> String {
    match value {
        None => "NULL".into(),
        Some(Raw(ty, b)) => {
            let s = match ty.kind() {
                Kind::Array(element) => array(element, &b),
                _ => scalar(&ty, &b),
            };
            if s.is_empty() {
                "(empty)".into()
            } else {
                s
            }
        }
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for ExtendedDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let stmt = self.client.prepare(sql).await.map_err(DbError)?;
        if stmt.columns().is_empty() {
            let n = self.client.execute(&stmt, &[]).await.map_err(DbError)?;
            return Ok(DBOutput::StatementComplete(n));
        }
        let rows = self.client.query(&stmt, &[]).await.map_err(DbError)?;
        let rows = rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| text(r.get::<_, Option<Raw>>(i)))
                    .collect()
            })
            .collect();
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; stmt.columns().len()],
            rows,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "postgres-extended"
    }
}
