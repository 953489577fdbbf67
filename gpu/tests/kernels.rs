//! Every kind of generated kernel compiles under NVRTC, without a GPU: hand-picked specs that
//! cover each operator and type, and a few hundred random ones. libnvrtc comes from
//! `SHOAL_NVRTC_LIBRARY`, the loader's path, or else the PyPI wheel `nvidia-cuda-nvrtc-cu12`,
//! installed here into a venv under the target directory on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_gpu::codegen::{aggregate_source, filter_project_source};
use shoal_gpu::testdata::{ExprGenerator, DECIMAL};
use shoal_gpu::{
    nvrtc, AggregateCall, AggregateFunction, ArithOp, CompareOp, FilterProject, GpuExpr, GpuType,
    Literal, PartialAggregate, Projection,
};

/// The wheel matching cudarc's `cuda-12080` feature.
const NVRTC_WHEEL: &str = "nvidia-cuda-nvrtc-cu12==12.8.93";

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} did not start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes libnvrtc loadable, installing the wheel when neither the environment nor the loader's
/// path has it. Panics when that fails: the test command runs where PyPI is reachable. The tests
/// of this binary run in parallel, so the install happens once, behind a `OnceLock`: two
/// `venv --clear` runs on one directory race and fail.
fn ensure_nvrtc() {
    static READY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    READY.get_or_init(install_nvrtc);
}

fn install_nvrtc() {
    if nvrtc::nvrtc_available().is_ok() {
        return;
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nvrtc-venv");
    if find_file(&venv, "libnvrtc.so.12").is_none() {
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv));
        run(Command::new(venv.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            NVRTC_WHEEL,
        ]));
    }
    let library = find_file(&venv, "libnvrtc.so.12").expect("the wheel installs libnvrtc.so.12");
    nvrtc::load_library(&library).expect("libnvrtc loads");
    nvrtc::nvrtc_available().expect("libnvrtc is usable once loaded");
}

fn compile_filter_project(spec: &FilterProject) {
    let generated = filter_project_source(spec).expect("spec is well typed");
    for arch in ["compute_80", "compute_90"] {
        if let Err(e) = nvrtc::compile(&generated.source, arch, "filter_project") {
            panic!(
                "{e}\nspec: {}\nsource:\n{}",
                spec.cache_key(),
                generated.source
            );
        }
    }
}

fn compile_aggregate(spec: &PartialAggregate) {
    let generated = aggregate_source(spec).expect("spec is well typed");
    for arch in ["compute_80", "compute_90"] {
        if let Err(e) = nvrtc::compile(&generated.source, arch, "partial_aggregate") {
            panic!("{e}\nspec: {spec:?}\nsource:\n{}", generated.source);
        }
    }
}

fn col(index: usize, t: GpuType) -> GpuExpr {
    GpuExpr::column(index, t)
}

#[test]
fn every_operator_and_type_compiles() {
    ensure_nvrtc();
    let wide = GpuType::Decimal128 {
        precision: 20,
        scale: 4,
    };
    let mut projections = Vec::new();
    let mut push = |expr: GpuExpr| {
        let name = format!("p{}", projections.len());
        projections.push(Projection { expr, name });
    };
    for (t, literal) in [
        (GpuType::Int32, Literal::Int32(i32::MIN)),
        (GpuType::Int64, Literal::Int64(i64::MIN)),
        (GpuType::Float64, Literal::Float64(f64::NAN)),
    ] {
        for op in [
            ArithOp::Add,
            ArithOp::Sub,
            ArithOp::Mul,
            ArithOp::Div,
            ArithOp::Mod,
        ] {
            for checked in [true, false] {
                push(GpuExpr::arith(
                    op,
                    col(0, t),
                    GpuExpr::Literal(literal),
                    checked,
                ));
            }
        }
    }
    for op in [ArithOp::Add, ArithOp::Sub, ArithOp::Mul] {
        push(GpuExpr::arith(op, col(1, DECIMAL), col(2, wide), true));
        push(GpuExpr::arith(
            op,
            col(1, DECIMAL),
            GpuExpr::Literal(Literal::Decimal128 {
                value: -(10i128.pow(30)),
                precision: 38,
                scale: 0,
            }),
            false,
        ));
    }
    push(GpuExpr::arith(
        ArithOp::Sub,
        col(3, GpuType::Date32),
        col(3, GpuType::Date32),
        true,
    ));
    push(GpuExpr::Cast {
        input: Box::new(col(0, GpuType::Int32)),
        to: GpuType::Int64,
    });
    push(GpuExpr::Cast {
        input: Box::new(col(0, GpuType::Int32)),
        to: GpuType::Float64,
    });
    push(GpuExpr::Literal(Literal::Null(DECIMAL)));
    push(GpuExpr::IsNull(Box::new(col(4, GpuType::Boolean))));
    let mut predicate = GpuExpr::Literal(Literal::Boolean(true));
    for op in CompareOp::ALL {
        for (t, index) in [
            (GpuType::Float64, 5),
            (DECIMAL, 1),
            (GpuType::Boolean, 4),
            (GpuType::Date32, 3),
        ] {
            let compare = GpuExpr::compare(op, col(index, t), col(index, t));
            predicate = if matches!(op, CompareOp::Lt | CompareOp::Gt) {
                GpuExpr::Or(Box::new(predicate), Box::new(compare))
            } else {
                GpuExpr::And(
                    Box::new(predicate),
                    Box::new(GpuExpr::Not(Box::new(compare))),
                )
            };
        }
    }
    compile_filter_project(&FilterProject {
        predicate: Some(predicate),
        projections: projections.clone(),
        row_numbers: true,
    });
    compile_filter_project(&FilterProject {
        predicate: None,
        projections,
        row_numbers: false,
    });

    let call = |function, input: Option<(usize, GpuType)>| AggregateCall {
        function,
        input,
        name: format!("{function:?}"),
    };
    compile_aggregate(&PartialAggregate {
        group_by: vec![
            (0, GpuType::Int32, "k".into()),
            (4, GpuType::Boolean, "b".into()),
            (3, GpuType::Date32, "d".into()),
            (6, GpuType::Int64, "l".into()),
        ],
        aggregates: vec![
            call(AggregateFunction::Count, None),
            call(AggregateFunction::Count, Some((5, GpuType::Float64))),
            call(AggregateFunction::Sum, Some((0, GpuType::Int32))),
            call(AggregateFunction::Sum, Some((6, GpuType::Int64))),
            call(AggregateFunction::Sum, Some((5, GpuType::Float64))),
            call(AggregateFunction::Sum, Some((1, DECIMAL))),
            call(AggregateFunction::Max, Some((3, GpuType::Date32))),
            call(AggregateFunction::Min, Some((0, GpuType::Int32))),
            call(AggregateFunction::Max, Some((6, GpuType::Int64))),
            call(AggregateFunction::Avg, Some((5, GpuType::Float64))),
            call(AggregateFunction::Avg, Some((1, DECIMAL))),
        ],
    });
    // No GROUP BY: one group, no key array, block-level states merged once per block.
    compile_aggregate(&PartialAggregate {
        group_by: vec![],
        aggregates: vec![
            call(AggregateFunction::Count, None),
            call(AggregateFunction::Sum, Some((6, GpuType::Int64))),
            call(AggregateFunction::Sum, Some((5, GpuType::Float64))),
            call(AggregateFunction::Sum, Some((1, DECIMAL))),
            call(AggregateFunction::Min, Some((0, GpuType::Int32))),
            call(AggregateFunction::Max, Some((3, GpuType::Date32))),
            call(AggregateFunction::Avg, Some((1, DECIMAL))),
        ],
    });
}

#[test]
fn random_specs_compile() {
    ensure_nvrtc();
    let mut generator = ExprGenerator::new(7);
    for _ in 0..150 {
        compile_filter_project(&generator.filter_project());
    }
    for _ in 0..50 {
        compile_aggregate(&generator.partial_aggregate());
    }
    for _ in 0..20 {
        let spec = generator.top_n();
        let generated = shoal_gpu::top_n::kernel_source(&spec).expect("supported key");
        for arch in ["compute_80", "compute_90"] {
            if let Err(e) = nvrtc::compile(&generated.source, arch, "top_n") {
                panic!("{e}\nspec: {spec:?}\nsource:\n{}", generated.source);
            }
        }
    }
}
