//! edge-scribe's entry point: parse the command line, validate configuration before touching any
//! device or socket, set up logging, hand over to the library, and turn errors into exit codes.

use std::process::ExitCode;

use clap::Parser;
use edge_scribe::cli::{self, Cli, EXIT_USAGE};
use edge_scribe::config::LogFormat;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.command.common_args().map(cli::load_config);
    let config = match config.transpose() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("edge-scribe: {e}");
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    let (level, format) = config
        .as_ref()
        .map(|c| (c.log_level.clone(), c.log_format))
        .unwrap_or_else(|| ("info".into(), LogFormat::Text));
    edge_scribe::logging::init(&level, format);
    match cli::run(cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-scribe: {e:#}");
            ExitCode::FAILURE
        }
    }
}
