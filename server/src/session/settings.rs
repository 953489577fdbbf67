//! Session settings (GUCs): what SET/SHOW/RESET, `current_setting` and ParameterStatus see.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use crate::error::{ServerError, ServerResult};

pub const SERVER_VERSION: &str = "15.8";
pub const SERVER_VERSION_NUM: &str = "150008";

/// (name as shown, default value). Names match case-insensitively.
const DEFAULTS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("DateStyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "off"),
    ("extra_float_digits", "1"),
    ("idle_in_transaction_session_timeout", "0"),
    ("integer_datetimes", "on"),
    ("IntervalStyle", "postgres"),
    ("is_superuser", "on"),
    ("lc_collate", "C.UTF-8"),
    ("lc_ctype", "C.UTF-8"),
    ("lc_messages", "C.UTF-8"),
    ("lc_monetary", "C.UTF-8"),
    ("lc_numeric", "C.UTF-8"),
    ("lc_time", "C.UTF-8"),
    ("lock_timeout", "0"),
    ("max_connections", "200"),
    ("max_identifier_length", "63"),
    ("search_path", "\"$user\", public"),
    ("server_encoding", "UTF8"),
    ("server_version", SERVER_VERSION),
    ("server_version_num", SERVER_VERSION_NUM),
    ("session_authorization", ""),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("synchronous_commit", "on"),
    ("TimeZone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
    ("work_mem", "4MB"),
    ("row_security", "on"),
    ("jit", "off"),
    ("enable_seqscan", "on"),
    // Facts about the server that clients read: pgJDBC sizes index metadata by
    // max_index_keys, SQLAlchemy reads the default access method (Shoal's tables are what
    // pg_class calls heap).
    ("max_index_keys", "32"),
    ("block_size", "8192"),
    ("default_table_access_method", "heap"),
    // Where partition pipelines run: auto (the GPU when the node has one and the cost model
    // says it pays), on (always the device; the CPU reference of its operators without a
    // GPU), off.
    ("shoal.gpu", "auto"),
];

/// Settings that cannot be changed by SET.
const READ_ONLY: &[&str] = &[
    "server_version",
    "server_version_num",
    "server_encoding",
    "integer_datetimes",
    "lc_collate",
    "lc_ctype",
    "max_connections",
    "max_identifier_length",
    "is_superuser",
    "max_index_keys",
    "block_size",
    "default_table_access_method",
];

pub struct Settings {
    values: Mutex<BTreeMap<String, (String, String)>>,
}

fn key(name: &str) -> String {
    name.trim().to_lowercase()
}

impl Settings {
    pub fn new(user: &str) -> Self {
        let mut values = BTreeMap::new();
        for (name, value) in DEFAULTS {
            values.insert(key(name), (name.to_string(), value.to_string()));
        }
        values.insert(
            "session_authorization".into(),
            ("session_authorization".into(), user.to_string()),
        );
        Settings {
            values: Mutex::new(values),
        }
    }

    /// The setting a SHOW names: `SHOW shoal.gpu` arrives as two identifiers, `SHOW time zone`
    /// as two words.
    pub fn name_of(&self, words: &[String]) -> String {
        let dotted = words.join(".");
        if words.len() > 1 && self.get(&dotted).is_some() {
            dotted
        } else {
            words.join(" ")
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.values.lock().get(&key(name)).map(|(_, v)| v.clone())
    }

    /// The spelling SHOW uses for the column header.
    pub fn display_name(&self, name: &str) -> String {
        self.values
            .lock()
            .get(&key(name))
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| name.to_string())
    }

    pub fn all(&self) -> Vec<(String, String)> {
        self.values.lock().values().cloned().collect()
    }

    /// Validates and applies `SET name = value`.
    pub fn set(&self, name: &str, value: &str) -> ServerResult<()> {
        let k = key(name);
        if READ_ONLY.contains(&k.as_str()) {
            return Err(ServerError::InvalidSetting {
                name: name.into(),
                value: value.into(),
            });
        }
        let value = normalize(&k, value)?;
        let mut values = self.values.lock();
        match values.get_mut(&k) {
            Some(entry) => entry.1 = value,
            // Custom, dotted settings (`myapp.tenant`) are allowed, as in PostgreSQL.
            None if k.contains('.') => {
                values.insert(k.clone(), (k, value));
            }
            None => return Err(ServerError::UnknownSetting(name.into())),
        }
        Ok(())
    }

    pub fn reset(&self, name: &str) -> ServerResult<()> {
        let k = key(name);
        match DEFAULTS.iter().find(|(n, _)| key(n) == k) {
            Some((n, v)) => {
                self.values.lock().insert(k, (n.to_string(), v.to_string()));
                Ok(())
            }
            None if k.contains('.') => {
                self.values.lock().remove(&k);
                Ok(())
            }
            None => Err(ServerError::UnknownSetting(name.into())),
        }
    }

    pub fn reset_all(&self, user: &str) {
        *self.values.lock() = Settings::new(user).values.into_inner();
    }
}

/// Checks values whose meaning Shoal depends on; others are stored as given.
fn normalize(key: &str, value: &str) -> ServerResult<String> {
    let bad = || ServerError::InvalidSetting {
        name: key.into(),
        value: value.into(),
    };
    match key {
        "transaction_isolation" | "default_transaction_isolation" => {
            match value.to_lowercase().as_str() {
                // READ UNCOMMITTED behaves as READ COMMITTED, as in PostgreSQL.
                "read committed" | "read uncommitted" => Ok("read committed".into()),
                "repeatable read" => Ok("repeatable read".into()),
                "serializable" => Err(ServerError::NotSupported(
                    "SERIALIZABLE isolation (Shoal offers READ COMMITTED and REPEATABLE READ)"
                        .into(),
                )),
                _ => Err(bad()),
            }
        }
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => {
            parse_duration_ms(value)
                .map(|ms| ms.to_string())
                .ok_or_else(bad)
        }
        "client_encoding" => match value.to_uppercase().replace(['-', '_'], "").as_str() {
            "UTF8" | "UNICODE" => Ok("UTF8".into()),
            _ => Err(ServerError::NotSupported(format!(
                "client_encoding {value} (only UTF8)"
            ))),
        },
        "transaction_read_only" | "default_transaction_read_only" => {
            match value.to_lowercase().as_str() {
                "off" | "false" | "0" => Ok("off".into()),
                "on" | "true" | "1" => {
                    Err(ServerError::NotSupported("read-only transactions".into()))
                }
                _ => Err(bad()),
            }
        }
        "shoal.gpu" => shoal_executor::GpuMode::parse(value)
            .map(|mode| mode.as_str().to_string())
            .ok_or_else(bad),
        "standard_conforming_strings" => match value.to_lowercase().as_str() {
            "on" | "true" | "1" => Ok("on".into()),
            _ => Err(ServerError::NotSupported(
                "standard_conforming_strings = off".into(),
            )),
        },
        _ => Ok(value.to_string()),
    }
}

/// `5000`, `5s`, `100ms`, `1min` → milliseconds.
pub fn parse_duration_ms(value: &str) -> Option<u64> {
    let v = value.trim().trim_matches('\'').to_lowercase();
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits.parse().ok()?;
    let unit = v[digits.len()..].trim();
    Some(match unit {
        "" | "ms" => n,
        "s" => n * 1000,
        "min" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_show_reset() {
        let s = Settings::new("alice");
        s.set("DateStyle", "ISO, MDY").unwrap();
        s.set("statement_timeout", "5s").unwrap();
        assert_eq!(s.get("statement_timeout").unwrap(), "5000");
        assert!(matches!(
            s.set("no_such", "1"),
            Err(ServerError::UnknownSetting(_))
        ));
        s.set("app.tenant", "7").unwrap();
        assert_eq!(s.get("APP.TENANT").unwrap(), "7");
        s.reset("statement_timeout").unwrap();
        assert_eq!(s.get("statement_timeout").unwrap(), "0");
        assert!(s.set("transaction_isolation", "serializable").is_err());
        assert_eq!(s.get("session_authorization").unwrap(), "alice");
    }
}
