//! The `wsproxy` binary: parse the command line, set up logging, run the listener.

use std::process::ExitCode;
use wsproxy::cli::{self, Command};
use wsproxy::listener::{self, Permits, threads};
use wsproxy::logging::init_logging;
use wsproxy::shutdown;

fn main() -> ExitCode {
    let config = match cli::parse(std::env::args_os().skip(1).collect()) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("wsproxy {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("wsproxy: {message}");
            eprintln!("{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    init_logging(config.verbosity);
    let mut config = config;
    config.max_connections = listener::tunnel_capacity(config.max_connections);
    threads::configure(config.spare_threads);
    let permits = Permits::new(config.max_connections);
    let tls = config.tls.clone();
    let on_hangup = Box::new(move || match &tls {
        Some(tls) => match tls.reload() {
            Ok(()) => log::info!("SIGHUP: reloaded the TLS certificate and key"),
            Err(e) => log::error!("SIGHUP: kept the old certificate: {e}"),
        },
        None => log::info!("SIGHUP: nothing to reload"),
    });
    let result = shutdown::install(permits.clone(), config.shutdown_grace, on_hangup)
        .and_then(|()| listener::bind(&config))
        .and_then(|l| listener::run(l, *config, permits));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsproxy: {e}");
            ExitCode::FAILURE
        }
    }
}
