//! `to_char(date or timestamp, pattern)` with PostgreSQL's template patterns.
//!
//! DataFusion's `to_char` reads chrono's `%Y-%m-%d` patterns, so a PostgreSQL pattern such as
//! `'YYYY-MM-DD'` came back unchanged as the answer. This one replaces it: it formats dates and
//! timestamps by PostgreSQL's patterns (`YYYY MM DD HH24 MI SS MS US AM Mon Month Dy Day DDD D
//! Q WW IW ...`, the `FM` prefix, `"quoted text"`) and refuses other arguments (numbers) with a
//! clear error instead of guessing.

use std::sync::Arc;

use chrono::{Datelike, NaiveDateTime, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::datatypes::{
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use datafusion::arrow::temporal_conversions::{as_datetime, date32_to_datetime};
use datafusion::common::{exec_err, ScalarValue};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
struct PgToChar {
    signature: Signature,
    /// DataFusion's `to_char` also answers to `date_format`: replacing both names drops it
    /// from the registry, so that no rebuilt session state can bring it back as `to_char`.
    aliases: Vec<String>,
}

pub(crate) fn to_char_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(PgToChar {
        signature: Signature::any(2, Volatility::Immutable),
        aliases: vec!["date_format".into()],
    })
}

impl ScalarUDFImpl for PgToChar {
    fn name(&self) -> &str {
        "to_char"
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [value, pattern] = args.args.as_slice() else {
            return exec_err!("to_char takes a value and a pattern");
        };
        let rows = args.number_rows;
        let values = value.to_array(rows)?;
        let patterns = pattern.to_array(rows)?;
        let patterns = datafusion::arrow::compute::cast(&patterns, &DataType::Utf8)?;
        let patterns = patterns.as_string::<i32>();
        let mut out = Vec::with_capacity(rows);
        for i in 0..values.len() {
            if values.is_null(i) || patterns.is_null(i) {
                out.push(None);
                continue;
            }
            let Some(at) = datetime_at(&values, i)? else {
                return exec_err!(
                    "to_char of {} is not supported yet (only dates and timestamps)",
                    values.data_type()
                );
            };
            out.push(Some(format_pg(&at, patterns.value(i))));
        }
        let texts: ArrayRef = Arc::new(StringArray::from(out));
        Ok(match (value, pattern) {
            (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&texts, 0)?)
            }
            _ => ColumnarValue::Array(texts),
        })
    }
}

/// The date or timestamp at row `i`; `None` when the column holds neither.
fn datetime_at(values: &ArrayRef, i: usize) -> DfResult<Option<NaiveDateTime>> {
    let at = match values.data_type() {
        DataType::Date32 => date32_to_datetime(
            values
                .as_primitive::<datafusion::arrow::datatypes::Date32Type>()
                .value(i),
        ),
        DataType::Timestamp(TimeUnit::Second, _) => as_datetime::<TimestampSecondType>(
            values.as_primitive::<TimestampSecondType>().value(i),
        ),
        DataType::Timestamp(TimeUnit::Millisecond, _) => as_datetime::<TimestampMillisecondType>(
            values.as_primitive::<TimestampMillisecondType>().value(i),
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => as_datetime::<TimestampMicrosecondType>(
            values.as_primitive::<TimestampMicrosecondType>().value(i),
        ),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => as_datetime::<TimestampNanosecondType>(
            values.as_primitive::<TimestampNanosecondType>().value(i),
        ),
        _ => return Ok(None),
    };
    match at {
        Some(at) => Ok(Some(at)),
        None => exec_err!("to_char: timestamp out of range"),
    }
}

pub(crate) const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
pub(crate) const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// A name in the case the pattern spelled it (`MONTH`, `Month`, `month`), padded to nine
/// characters unless `fill` mode (FM) is on.
fn name(word: &str, spelled: &str, fm: bool, pad: bool) -> String {
    let cased = if spelled.chars().all(|c| c.is_ascii_uppercase()) {
        word.to_uppercase()
    } else if spelled.starts_with(|c: char| c.is_ascii_uppercase()) {
        word.to_string()
    } else {
        word.to_lowercase()
    };
    if pad && !fm {
        format!("{cased:<9}")
    } else {
        cased
    }
}

fn number(value: i64, width: usize, fm: bool) -> String {
    if fm {
        value.to_string()
    } else {
        format!("{value:0width$}")
    }
}

/// `at` formatted by PostgreSQL template `pattern`.
pub(crate) fn format_pg(at: &NaiveDateTime, pattern: &str) -> String {
    let mut out = String::new();
    let mut rest = pattern;
    let mut fm = false;
    while let Some(c) = rest.chars().next() {
        if rest.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("FM")) {
            fm = true;
            rest = &rest[2..];
            continue;
        }
        if c == '"' {
            let end = rest[1..].find('"').map_or(rest.len(), |e| e + 1);
            out.push_str(&rest[1..end]);
            rest = rest.get(end + 1..).unwrap_or("");
            continue;
        }
        if c == '\\' && rest.len() > 1 {
            let next = rest[1..].chars().next().unwrap_or('\\');
            out.push(next);
            rest = &rest[1 + next.len_utf8()..];
            continue;
        }
        let upper = rest.to_ascii_uppercase();
        let hour12 = match at.hour() % 12 {
            0 => 12,
            h => h,
        };
        let pm = at.hour() >= 12;
        let month = MONTHS[at.month0() as usize];
        let day = DAYS[at.weekday().num_days_from_sunday() as usize];
        // Longest patterns first, so that `HH24` is not read as `HH` and `24`.
        let (text, taken) = if upper.starts_with("HH24") {
            (number(at.hour() as i64, 2, fm), 4)
        } else if upper.starts_with("HH12") {
            (number(hour12 as i64, 2, fm), 4)
        } else if upper.starts_with("HH") {
            (number(hour12 as i64, 2, fm), 2)
        } else if upper.starts_with("MI") {
            (number(at.minute() as i64, 2, fm), 2)
        } else if upper.starts_with("SS") {
            (number(at.second() as i64, 2, fm), 2)
        } else if upper.starts_with("MS") {
            (number((at.nanosecond() / 1_000_000) as i64, 3, fm), 2)
        } else if upper.starts_with("US") {
            (number((at.nanosecond() / 1_000) as i64, 6, fm), 2)
        } else if upper.starts_with("A.M.") || upper.starts_with("P.M.") {
            let text = if pm { "P.M." } else { "A.M." };
            (name(text, &rest[..4], true, false), 4)
        } else if upper.starts_with("AM") || upper.starts_with("PM") {
            let text = if pm { "PM" } else { "AM" };
            (name(text, &rest[..2], true, false), 2)
        } else if upper.starts_with("YYYY") {
            (number(at.year() as i64, 4, fm), 4)
        } else if upper.starts_with("YYY") {
            (number((at.year() % 1000) as i64, 3, fm), 3)
        } else if upper.starts_with("YY") {
            (number((at.year() % 100) as i64, 2, fm), 2)
        } else if upper.starts_with("MONTH") {
            (name(month, &rest[..5], fm, true), 5)
        } else if upper.starts_with("MON") {
            (name(&month[..3], &rest[..3], fm, false), 3)
        } else if upper.starts_with("MM") {
            (number(at.month() as i64, 2, fm), 2)
        } else if upper.starts_with("DAY") {
            (name(day, &rest[..3], fm, true), 3)
        } else if upper.starts_with("DDD") {
            (number(at.ordinal() as i64, 3, fm), 3)
        } else if upper.starts_with("DD") {
            (number(at.day() as i64, 2, fm), 2)
        } else if upper.starts_with("DY") {
            (name(&day[..3], &rest[..2], fm, false), 2)
        } else if upper.starts_with("ID") {
            (at.weekday().number_from_monday().to_string(), 2)
        } else if upper.starts_with("IW") {
            (number(at.iso_week().week() as i64, 2, fm), 2)
        } else if upper.starts_with("WW") {
            (number((at.ordinal0() / 7 + 1) as i64, 2, fm), 2)
        } else if upper.starts_with('D') {
            (at.weekday().number_from_sunday().to_string(), 1)
        } else if upper.starts_with('Q') {
            ((at.month0() / 3 + 1).to_string(), 1)
        } else if upper.starts_with('Y') {
            ((at.year() % 10).to_string(), 1)
        } else {
            (c.to_string(), c.len_utf8())
        };
        out.push_str(&text);
        rest = &rest[taken..];
        // FM applies to the one pattern after it.
        fm = false;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::format_pg;

    #[test]
    fn postgres_patterns() {
        let at = chrono::NaiveDate::from_ymd_opt(2024, 2, 9)
            .and_then(|d| d.and_hms_micro_opt(13, 4, 5, 120_000))
            .expect("valid timestamp");
        assert_eq!(
            format_pg(&at, "YYYY-MM-DD HH24:MI:SS.MS"),
            "2024-02-09 13:04:05.120"
        );
        assert_eq!(format_pg(&at, "HH12:MI AM"), "01:04 PM");
        assert_eq!(
            format_pg(&at, "Month|Mon|MONTH|mon"),
            "February |Feb|FEBRUARY |feb"
        );
        assert_eq!(format_pg(&at, "FMMonth FMDD, YYYY"), "February 9, 2024");
        assert_eq!(
            format_pg(&at, "Day Dy D DDD Q IW"),
            "Friday    Fri 6 040 1 06"
        );
        assert_eq!(format_pg(&at, "\"Week\" WW yy"), "Week 06 24");
        // Text that is no pattern passes through, multibyte characters and all.
        assert_eq!(format_pg(&at, "€x é \"unclosed"), "€x é unclosed");
    }
}
