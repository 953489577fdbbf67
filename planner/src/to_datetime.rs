//! `to_date(text, pattern)` and `to_timestamp(text, pattern)` with PostgreSQL's template
//! patterns (`YYYY-MM-DD HH24:MI:SS`, `DD Mon YYYY`, `HH12:MI AM`, ...), replacing
//! DataFusion's functions of the same names, which read chrono patterns. `to_timestamp` of
//! one number (seconds since 1970) is kept. Timestamps are `timestamptz` read as UTC, the
//! zone Shoal shows them in.
//!
//! As PostgreSQL's, parsing is forgiving about spacing: blanks before a field are skipped, a
//! separator in the pattern matches any one non-alphanumeric character, and a numeric field
//! reads up to its width in digits (fewer when a non-digit ends it).

use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use datafusion::arrow::array::{ArrayRef, AsArray, Date32Builder, TimestampMicrosecondBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, TimeUnit};
use datafusion::common::{exec_err, DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use shoal_executor::ExecError;

// to_char's names; read here without regard to case.
use crate::to_char::{DAYS, MONTHS};

fn out_of_range(input: &str) -> DataFusionError {
    DataFusionError::External(Box::new(ExecError::DatetimeFieldOutOfRange(
        input.to_string(),
    )))
}

fn bad_format(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(ExecError::InvalidDatetimeFormat(message)))
}

/// PostgreSQL template patterns this reader does not take (0A000 rather than a wrong date),
/// longest first where one begins another.
const UNSUPPORTED: [&str; 25] = [
    "TZH", "TZM", "TZ", "OF", "IYYY", "IYY", "IY", "IDDD", "ID", "IW", "I", "J", "Q", "RM", "CC",
    "WW", "W", "SSSSS", "SSSS", "FF", "Y,YYY", "Y", "BC", "AD", "D",
];

/// The fields a pattern filled in.
#[derive(Default)]
struct Fields {
    year: Option<i32>,
    /// Two- or three-digit years, completed to the nearest century as PostgreSQL does.
    short_year: Option<(i32, usize)>,
    month: Option<u32>,
    day: Option<u32>,
    day_of_year: Option<u32>,
    hour: Option<u32>,
    twelve_hour: bool,
    pm: Option<bool>,
    minute: u32,
    second: u32,
    micros: u32,
}

struct Reader<'a> {
    input: &'a str,
    rest: &'a str,
}

impl<'a> Reader<'a> {
    fn skip_blanks(&mut self) {
        self.rest = self.rest.trim_start();
    }

    /// Up to `width` digits (after blanks), and how many were read.
    fn digits(&mut self, width: usize, field: &str) -> Result<(i64, usize)> {
        self.skip_blanks();
        let negative = field.starts_with('Y') && self.rest.starts_with('-');
        let body = if negative { &self.rest[1..] } else { self.rest };
        let len = body
            .bytes()
            .take(width)
            .take_while(u8::is_ascii_digit)
            .count();
        if len == 0 {
            let shown: String = self.rest.chars().take(width.max(1)).collect();
            return Err(bad_format(format!(
                "invalid value \"{shown}\" for \"{field}\": value must be an integer"
            )));
        }
        let value: i64 = body[..len].parse().map_err(|_| out_of_range(self.input))?;
        self.rest = &body[len..];
        Ok((if negative { -value } else { value }, len))
    }

    /// One of `names` (compared without case, whole or as its first three letters).
    fn name(&mut self, names: &[&str], abbreviated: bool, field: &str) -> Result<usize> {
        self.skip_blanks();
        for (i, name) in names.iter().enumerate() {
            let candidate = if abbreviated { &name[..3] } else { name };
            if self
                .rest
                .get(..candidate.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(candidate))
            {
                self.rest = &self.rest[candidate.len()..];
                return Ok(i);
            }
        }
        let shown: String = self.rest.chars().take(9).collect();
        Err(bad_format(format!("invalid value \"{shown}\" for \"{field}\": the given value did not match any of the allowed values for this field")))
    }

    fn meridian(&mut self, dotted: bool) -> Result<bool> {
        self.skip_blanks();
        let options: [(&str, bool); 2] = match dotted {
            true => [("a.m.", false), ("p.m.", true)],
            false => [("am", false), ("pm", true)],
        };
        for (text, pm) in options {
            if self
                .rest
                .get(..text.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(text))
            {
                self.rest = &self.rest[text.len()..];
                return Ok(pm);
            }
        }
        Err(bad_format(format!(
            "invalid value for \"AM\" in source string \"{}\"",
            self.input
        )))
    }
}

fn u32_of(value: i64, input: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| out_of_range(input))
}

/// Reads `input` by `pattern` into its fields.
fn read(input: &str, pattern: &str) -> Result<Fields> {
    let mut f = Fields::default();
    let mut r = Reader { input, rest: input };
    let mut p = pattern;
    while let Some(c) = p.chars().next() {
        let upper = p.get(..p.len().min(5)).unwrap_or(p).to_ascii_uppercase();
        let starts = |token: &str| upper.starts_with(token);
        let taken = if starts("FM") || starts("FX") {
            2
        } else if c == '"' {
            // Quoted text in the pattern skips as many characters of the input.
            let end = p[1..].find('"').map_or(p.len(), |e| e + 1);
            let skip = p[1..end].chars().count();
            let mut chars = r.rest.chars();
            for _ in 0..skip {
                chars.next();
            }
            r.rest = chars.as_str();
            (end + 1).min(p.len())
        } else if starts("HH24") || starts("HH12") || starts("HH") {
            let (h, _) = r.digits(2, "HH")?;
            f.hour = Some(u32_of(h, input)?);
            f.twelve_hour = !starts("HH24");
            if starts("HH") && !starts("HH24") && !starts("HH12") {
                2
            } else {
                4
            }
        } else if starts("MI") {
            f.minute = u32_of(r.digits(2, "MI")?.0, input)?;
            2
        } else if starts("SS") && !starts("SSSS") {
            f.second = u32_of(r.digits(2, "SS")?.0, input)?;
            2
        } else if starts("MS") || starts("US") {
            let width = if starts("MS") { 3 } else { 6 };
            let (value, len) = r.digits(width, &upper[..2])?;
            // Digits are a fraction of a second: `.5` under MS is 500 milliseconds.
            let micros = u32_of(value, input)? * 10u32.pow((6 - len) as u32);
            f.micros = if width == 3 {
                micros.min(999_000)
            } else {
                micros
            };
            2
        } else if starts("A.M.") || starts("P.M.") {
            f.pm = Some(r.meridian(true)?);
            4
        } else if starts("AM") || starts("PM") {
            f.pm = Some(r.meridian(false)?);
            2
        } else if starts("YYYY") {
            f.year = Some(i32::try_from(r.digits(4, "YYYY")?.0).map_err(|_| out_of_range(input))?);
            4
        } else if starts("YYY") || starts("YY") {
            let width = if starts("YYY") { 3 } else { 2 };
            let (value, len) = r.digits(width, "YY")?;
            f.short_year = Some((value as i32, len));
            width
        } else if starts("MONTH") {
            f.month = Some(r.name(&MONTHS, false, "Month")? as u32 + 1);
            5
        } else if starts("MON") {
            f.month = Some(r.name(&MONTHS, true, "Mon")? as u32 + 1);
            3
        } else if starts("MM") {
            f.month = Some(u32_of(r.digits(2, "MM")?.0, input)?);
            2
        } else if starts("DAY") {
            r.name(&DAYS, false, "Day")?;
            3
        } else if starts("DY") {
            r.name(&DAYS, true, "Dy")?;
            2
        } else if starts("DDD") {
            f.day_of_year = Some(u32_of(r.digits(3, "DDD")?.0, input)?);
            3
        } else if starts("DD") {
            f.day = Some(u32_of(r.digits(2, "DD")?.0, input)?);
            2
        } else if c.is_whitespace() {
            r.skip_blanks();
            c.len_utf8()
        } else if let Some(unsupported) = UNSUPPORTED.iter().find(|u| starts(u)) {
            return Err(DataFusionError::NotImplemented(format!(
                "template pattern \"{unsupported}\" is not supported by to_date/to_timestamp"
            )));
        } else if c.is_alphanumeric() {
            // Any other letter is literal text, which skips one character of the input.
            let mut chars = r.rest.chars();
            chars.next();
            r.rest = chars.as_str();
            c.len_utf8()
        } else {
            // A separator matches any one non-alphanumeric character (blanks around it too).
            r.skip_blanks();
            if let Some(next) = r.rest.chars().next().filter(|n| !n.is_alphanumeric()) {
                r.rest = &r.rest[next.len_utf8()..];
            }
            c.len_utf8()
        };
        p = &p[taken..];
    }
    Ok(f)
}

/// The moment `input` names by `pattern`.
fn parse(input: &str, pattern: &str) -> Result<NaiveDateTime> {
    let f = read(input, pattern)?;
    let year = match (f.year, f.short_year) {
        (Some(y), _) => y,
        (None, Some((y, 2))) => y + if y < 70 { 2000 } else { 1900 },
        (None, Some((y, _))) => y + if y < 100 { 2000 } else { 1000 },
        (None, None) => 1,
    };
    // Year 0 does not exist; PostgreSQL reads `0` as 1 BC.
    let year = if year <= 0 { year + 1 } else { year };
    let date = match f.day_of_year {
        Some(doy) if f.month.is_none() && f.day.is_none() => NaiveDate::from_yo_opt(year, doy),
        _ => NaiveDate::from_ymd_opt(year, f.month.unwrap_or(1), f.day.unwrap_or(1)),
    }
    .ok_or_else(|| out_of_range(input))?;
    let hour = match (f.hour, f.twelve_hour, f.pm) {
        (Some(h), true, _) | (Some(h), _, Some(_)) if !(1..=12).contains(&h) => {
            return Err(bad_format(format!(
                "hour \"{h}\" is invalid for the 12-hour clock: use the 24-hour clock, or give an hour between 1 and 12"
            )))
        }
        (Some(h), _, Some(pm)) => h % 12 + if pm { 12 } else { 0 },
        (Some(h), _, None) => h,
        (None, _, Some(true)) => 12,
        (None, _, _) => 0,
    };
    let time = NaiveTime::from_hms_micro_opt(hour, f.minute, f.second, f.micros)
        .ok_or_else(|| out_of_range(input))?;
    Ok(date.and_time(time))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToDateTime {
    name: &'static str,
    signature: Signature,
}

pub(crate) fn udfs() -> Vec<ScalarUDF> {
    let text_pattern = TypeSignature::String(2);
    vec![
        ScalarUDF::new_from_impl(ToDateTime {
            name: "to_date",
            signature: Signature::one_of(vec![text_pattern.clone()], Volatility::Stable),
        }),
        ScalarUDF::new_from_impl(ToDateTime {
            name: "to_timestamp",
            signature: Signature::one_of(
                vec![
                    text_pattern,
                    TypeSignature::Exact(vec![DataType::Float64]),
                    TypeSignature::Exact(vec![DataType::Int64]),
                ],
                Volatility::Stable,
            ),
        }),
    ]
}

impl ScalarUDFImpl for ToDateTime {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.name {
            "to_date" => DataType::Date32,
            _ => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let result: ArrayRef = if arrays.len() == 1 {
            // Seconds since 1970-01-01 UTC.
            let seconds = cast(&arrays[0], &DataType::Float64)?;
            let seconds = seconds.as_primitive::<Float64Type>();
            let mut out = TimestampMicrosecondBuilder::new().with_timezone("+00:00");
            for s in seconds.iter() {
                match s {
                    Some(s) if s.is_finite() && s.abs() < 9.2e12 => {
                        out.append_value((s * 1e6).round() as i64)
                    }
                    Some(_) => return exec_err!("timestamp out of range"),
                    None => out.append_null(),
                }
            }
            Arc::new(out.finish())
        } else {
            let texts = cast(&arrays[0], &DataType::Utf8)?;
            let patterns = cast(&arrays[1], &DataType::Utf8)?;
            let (texts, patterns) = (texts.as_string::<i32>(), patterns.as_string::<i32>());
            let moments = texts.iter().zip(patterns.iter()).map(|pair| match pair {
                (Some(text), Some(pattern)) => parse(text, pattern).map(Some),
                _ => Ok(None),
            });
            if self.name == "to_date" {
                let mut out = Date32Builder::new();
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
                for m in moments {
                    out.append_option(
                        m?.map(|m| m.date().signed_duration_since(epoch).num_days() as i32),
                    );
                }
                Arc::new(out.finish())
            } else {
                let mut out = TimestampMicrosecondBuilder::new().with_timezone("+00:00");
                for m in moments {
                    out.append_option(m?.map(|m| m.and_utc().timestamp_micros()));
                }
                Arc::new(out.finish())
            }
        };
        Ok(crate::functions::scalar_or_array(&args.args, result))
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn at(input: &str, pattern: &str) -> String {
        parse(input, pattern).unwrap().to_string()
    }

    #[test]
    fn postgres_patterns() {
        assert_eq!(at("2024-03-05", "YYYY-MM-DD"), "2024-03-05 00:00:00");
        assert_eq!(
            at("05 Mar 2024 14:30:15.25", "DD Mon YYYY HH24:MI:SS.MS"),
            "2024-03-05 14:30:15.250"
        );
        assert_eq!(at("20240305", "YYYYMMDD"), "2024-03-05 00:00:00");
        assert_eq!(
            at("2024/3/5 2:05 PM", "YYYY/MM/DD HH:MI AM"),
            "2024-03-05 14:05:00"
        );
        assert_eq!(at("  2024 - 03-05", "YYYY-MM-DD"), "2024-03-05 00:00:00");
        assert_eq!(at("March 5, 2024", "Month DD, YYYY"), "2024-03-05 00:00:00");
        assert_eq!(at("24-03-05", "YY-MM-DD"), "2024-03-05 00:00:00");
        assert_eq!(at("12:00 AM", "HH12:MI AM"), "0001-01-01 00:00:00");
        assert_eq!(at("2024 065", "YYYY DDD"), "2024-03-05 00:00:00");
        assert!(parse("2024-02-30", "YYYY-MM-DD").is_err());
        assert!(parse("2024-13-01", "YYYY-MM-DD").is_err());
        assert!(parse("abc", "YYYY").is_err());
        assert!(parse("13:00 PM", "HH:MI PM").is_err());
        assert!(parse("2024", "YYYY Q").is_err());
        assert!(parse("2024 5", "YYYY D").is_err());
        assert_eq!(
            at("2024-03-05T10:00", "YYYY-MM-DDTHH24:MI"),
            "2024-03-05 10:00:00"
        );
    }
}
