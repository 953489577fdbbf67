//! `pg_get_function_result(oid)` and `pg_get_function_arguments(oid)`: a function's result
//! type and argument list as PostgreSQL prints them (`SETOF record`, `VARIADIC "any"`,
//! `OUT word text, ...`). psql's `\df` and DBeaver's function browser call them.
//!
//! Every function Shoal has is a built-in one, described by PostgreSQL 15's pg_proc rows
//! (`pg15_catalog`); the answers are read from those rows, and types are named
//! as `format_type` names them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Int32Type};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// What the two functions need of one pg_proc row.
struct Proc {
    result: u32,
    returns_set: bool,
    /// Input argument types (`proargtypes`).
    inputs: Vec<u32>,
    /// All argument types, OUT ones included (`proallargtypes`), when some are not IN.
    all: Vec<u32>,
    modes: Vec<String>,
    names: Vec<String>,
}

struct Procs {
    procs: HashMap<u32, Proc>,
    type_names: HashMap<u32, String>,
}

fn procs() -> Option<&'static Procs> {
    static PROCS: OnceLock<Option<Procs>> = OnceLock::new();
    PROCS.get_or_init(load).as_ref()
}

fn load() -> Option<Procs> {
    let mut procs = HashMap::new();
    let batch = &crate::pg15_catalog::whole_relation("pg_proc")?;
    let int = |name: &str| -> Option<Vec<Option<i32>>> {
        let column = batch.column_by_name(name)?;
        let column = datafusion::arrow::compute::cast(column, &DataType::Int32).ok()?;
        Some(column.as_primitive::<Int32Type>().iter().collect())
    };
    let text = |name: &str| -> Option<Vec<Option<String>>> {
        let column = batch.column_by_name(name)?;
        let column = datafusion::arrow::compute::cast(column, &DataType::Utf8).ok()?;
        let strings = column.as_string::<i32>();
        Some(strings.iter().map(|s| s.map(str::to_string)).collect())
    };
    let (oids, results) = (int("oid")?, int("prorettype")?);
    let sets = text("proretset")?;
    let (inputs, all) = (text("proargtypes")?, text("proallargtypes")?);
    let (modes, names) = (text("proargmodes")?, text("proargnames")?);
    for row in 0..batch.num_rows() {
        let Some(oid) = oids[row] else { continue };
        let list = |v: &[Option<String>]| -> Vec<String> {
            v[row]
                .as_deref()
                .map(crate::pg_static_arrays::elements)
                .unwrap_or_default()
        };
        let oid_list = |v: &[Option<String>]| -> Vec<u32> {
            list(v).iter().filter_map(|e| e.parse().ok()).collect()
        };
        procs.insert(
            oid as u32,
            Proc {
                result: results[row].unwrap_or(0) as u32,
                returns_set: matches!(sets[row].as_deref(), Some("t" | "true")),
                inputs: oid_list(&inputs),
                all: oid_list(&all),
                modes: list(&modes),
                names: list(&names),
            },
        );
    }
    let types = crate::pg15_catalog::whole_relation("pg_type")?;
    let type_names = type_rows(&types).unwrap_or_default().into_iter().collect();
    Some(Procs { procs, type_names })
}

fn type_rows(batch: &RecordBatch) -> Option<Vec<(u32, String)>> {
    let oids =
        datafusion::arrow::compute::cast(batch.column_by_name("oid")?, &DataType::Int32).ok()?;
    let names = batch.column_by_name("typname")?.as_string_opt::<i32>()?;
    let oids = oids.as_primitive::<Int32Type>();
    Some(
        (0..batch.num_rows())
            .filter(|i| oids.is_valid(*i) && names.is_valid(*i))
            .map(|i| (oids.value(i) as u32, names.value(i).to_string()))
            .collect(),
    )
}

impl Procs {
    /// A type's name as `format_type(oid, NULL)` prints it.
    fn type_name(&self, oid: u32) -> String {
        let Some(name) = self.type_names.get(&oid) else {
            return "???".into();
        };
        if let Some(element) = name.strip_prefix('_') {
            let element_oid = self
                .type_names
                .iter()
                .find(|(_, n)| n.as_str() == element)
                .map(|(o, _)| *o);
            if let Some(element_oid) = element_oid {
                return format!("{}[]", self.type_name(element_oid));
            }
        }
        match name.as_str() {
            "int2" => "smallint",
            "int4" => "integer",
            "int8" => "bigint",
            "float4" => "real",
            "float8" => "double precision",
            "bool" => "boolean",
            "varchar" => "character varying",
            "bpchar" => "character",
            "varbit" => "bit varying",
            "timestamp" => "timestamp without time zone",
            "timestamptz" => "timestamp with time zone",
            "time" => "time without time zone",
            "timetz" => "time with time zone",
            // Names that are keywords or not lower-case identifiers are quoted.
            "any" => "\"any\"",
            "char" => "\"char\"",
            other => other,
        }
        .to_string()
    }

    fn result(&self, p: &Proc) -> String {
        let set = if p.returns_set { "SETOF " } else { "" };
        format!("{set}{}", self.type_name(p.result))
    }

    fn arguments(&self, p: &Proc) -> String {
        let types = if p.all.is_empty() { &p.inputs } else { &p.all };
        let arguments: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mode = match p.modes.get(i).map(String::as_str) {
                    Some("o") => "OUT ",
                    Some("b") => "INOUT ",
                    Some("v") => "VARIADIC ",
                    _ => "",
                };
                let name = match p.names.get(i) {
                    Some(n) if !n.is_empty() => format!("{n} "),
                    _ => String::new(),
                };
                format!("{mode}{name}{}", self.type_name(*t))
            })
            .collect();
        arguments.join(", ")
    }
}

/// One of the two functions; `describe` turns a pg_proc row into its answer.
#[derive(Debug, PartialEq, Eq, Hash)]
struct FunctionSignature {
    name: &'static str,
    signature: Signature,
    arguments: bool,
}

impl ScalarUDFImpl for FunctionSignature {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let oids = args.args[0].to_array(args.number_rows)?;
        let oids = datafusion::arrow::compute::cast(&oids, &DataType::Int64)?;
        let oids = oids.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let procs = procs();
        let answers: StringArray = oids
            .iter()
            .map(|oid| {
                let procs = procs?;
                let p = procs.procs.get(&u32::try_from(oid?).ok()?)?;
                Some(match self.arguments {
                    true => procs.arguments(p),
                    false => procs.result(p),
                })
            })
            .collect();
        Ok(crate::functions::scalar_or_array(
            &args.args,
            Arc::new(answers),
        ))
    }
}

pub(crate) fn udfs() -> [ScalarUDF; 2] {
    let udf = |name, arguments| {
        ScalarUDF::new_from_impl(FunctionSignature {
            name,
            signature: Signature::any(1, Volatility::Stable),
            arguments,
        })
    };
    [
        udf("pg_get_function_result", false),
        udf("pg_get_function_arguments", true),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_functions_are_described_as_postgres_describes_them() {
        let procs = procs().expect("pg_proc rows");
        let describe = |oid: u32| {
            let p = &procs.procs[&oid];
            (procs.result(p), procs.arguments(p))
        };
        // num_nulls(VARIADIC "any") returns integer.
        assert_eq!(describe(438), ("integer".into(), "VARIADIC \"any\"".into()));
        // generate_series(integer, integer, integer) returns a set.
        assert_eq!(
            describe(1066),
            ("SETOF integer".into(), "integer, integer, integer".into())
        );
        assert_eq!(
            describe(1686).1,
            "OUT word text, OUT catcode \"char\", OUT barelabel boolean, OUT catdesc text, \
             OUT baredesc text"
        );
    }
}
