use clap::Parser;
use shoal_server::config::{Cli, Command};

/// Stack of every runtime thread (workers and the blocking pool).
const WORKER_STACK_BYTES: usize = 32 * 1024 * 1024;

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match cli.command {
        Some(Command::Start(args)) => args,
        None => cli.start,
    };
    // Planning recurses over expression trees: a client's long AND/OR chain or deeply nested
    // subquery must not overflow a 2 MiB worker stack and abort the whole node.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(WORKER_STACK_BYTES)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(shoal_server::start(args)) {
        eprintln!("shoal: {e}");
        std::process::exit(1);
    }
    // Stopped on purpose: work still running on blocking threads (a statement's storage
    // reads, an etcd call) does not hold the exit up for long.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
}
