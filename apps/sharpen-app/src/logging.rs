use tracing_subscriber::EnvFilter;

/// Installs the `tracing` subscriber for a binary: human-readable lines on stderr, level from
/// `RUST_LOG` (default `info`, with burn's collective engine at `warn`: at `info` it prints every
/// peer's whole config when data-parallel training starts). Libraries only emit events;
/// binaries call this once at start.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,burn_collective=warn"));
    // A second call (tests driving several entry points) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
