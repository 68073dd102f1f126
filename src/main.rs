//! CLI -> config -> logging -> runtime -> lifecycle. No logic of its own: it
//! maps failures to exit codes (64, EX_USAGE, for configuration errors; 1 for
//! anything that fails at run time, such as a port in use).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ruchy_serve::config::{self, Layered, Sources};
use ruchy_serve::listen::Inherited;
use ruchy_serve::{lifecycle, logging, manual, privileges};

const EX_USAGE: u8 = 64;

/// A static-file HTTP daemon for systemd and Prometheus.
///
/// With no arguments it serves the bundled demo tree on http://127.0.0.1:8080.
#[derive(Parser)]
#[command(name = "ruchy-serve", version)]
struct Cli {
    /// Config file (TOML). Without it, built-in defaults apply.
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory to serve; overrides `root` from the file.
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Listen address (repeatable); replaces every [[listen]] from the file.
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Validate the configuration without binding anything (like `nginx -t`).
    Check,
    /// Print the effective configuration and where each value came from.
    Config,
    /// Say what a URL would get and why (site, locations, redirect, file,
    /// then the status and headers), without serving.
    Explain {
        /// `http://example.com/path`, `https://...:8443/p?q`, or `/path`.
        url: String,
        /// A request header, `Name: value` (repeatable).
        #[arg(short = 'H', long = "header", value_name = "HEADER")]
        headers: Vec<String>,
        /// The request method.
        #[arg(short = 'X', long, default_value = "GET")]
        method: String,
        /// The client's address, for `access` rules (the peer: with
        /// `trusted_proxies`, an `X-Forwarded-For` given with -H counts as
        /// the server would count it).
        #[arg(long, default_value = "127.0.0.1")]
        client: std::net::IpAddr,
        /// The TLS server name the client sends (default: an https URL's
        /// host): the certificate it is shown decides which sites it may
        /// ask for (421 otherwise).
        #[arg(long)]
        sni: Option<String>,
        /// Asked on the configuration's unix-socket listener (the client
        /// has no address).
        #[arg(long)]
        unix: bool,
    },
    /// Print a man page (roff) to stdout: `ruchy-serve man | man -l -`.
    Man {
        /// `ruchy-serve` (section 1, the default) or `ruchy-serve.toml`
        /// (section 5, every configuration key).
        #[arg(default_value = "ruchy-serve")]
        page: String,
    },
    /// Print shell completions to stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let sources = Sources {
        config_file: cli.config,
        root: cli.root,
        listen: cli.listen,
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Check => check(&sources),
        Command::Config => print_config(&sources),
        Command::Explain {
            url,
            headers,
            method,
            client,
            sni,
            unix,
        } => explain(
            &sources,
            ruchy_serve::explain::Question {
                url,
                headers,
                method,
                client,
                sni,
                unix,
            },
        ),
        Command::Man { page } => man(&page),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "ruchy-serve",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Serve => serve(&sources),
    }
}

/// The man pages: ruchy-serve(1) from the same definition as `--help`
/// (so the two cannot disagree) with the sections clap does not know, and
/// ruchy-serve.toml(5) from the reference configuration. The Debian
/// package ships both.
fn man(page: &str) -> ExitCode {
    use clap::CommandFactory;
    use std::io::Write;
    let mut out = Vec::new();
    let rendered = match page {
        "ruchy-serve" | "ruchy-serve.1" | "1" => {
            let cmd = Cli::command().about(
                "a static-file HTTP daemon for systemd and Prometheus; \
                 configuration: ruchy-serve.toml(5)",
            );
            let subcommands: Vec<(String, String)> = cmd
                .get_subcommands()
                .map(|s| {
                    let about = s.get_about().map(|a| a.to_string()).unwrap_or_default();
                    (s.get_name().to_string(), about)
                })
                .collect();
            let man = clap_mangen::Man::new(cmd);
            (|| -> std::io::Result<()> {
                man.render_title(&mut out)?;
                man.render_name_section(&mut out)?;
                man.render_synopsis_section(&mut out)?;
                man.render_description_section(&mut out)?;
                man.render_options_section(&mut out)?;
                // Described here rather than as pages of their own.
                writeln!(out, ".SH SUBCOMMANDS")?;
                for (name, about) in subcommands {
                    let (name, about) = (manual::roff(&name), manual::roff(&about));
                    writeln!(out, ".TP\n\\fB{name}\\fR\n{about}")?;
                }
                out.extend_from_slice(manual::page1_sections().as_bytes());
                man.render_version_section(&mut out)
            })()
        }
        "ruchy-serve.toml" | "ruchy-serve.toml.5" | "5" => {
            out.extend_from_slice(manual::page5(env!("CARGO_PKG_VERSION")).as_bytes());
            Ok(())
        }
        other => {
            eprintln!(
                "ruchy-serve: no man page {other:?} (hint: `ruchy-serve man` or `ruchy-serve man ruchy-serve.toml`)"
            );
            return ExitCode::from(EX_USAGE);
        }
    };
    match rendered.and_then(|()| std::io::stdout().write_all(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ruchy-serve: cannot write the man page: {e}");
            ExitCode::FAILURE
        }
    }
}

fn fail_config(e: config::ConfigError) -> ExitCode {
    eprintln!("ruchy-serve: configuration error: {e}");
    ExitCode::from(EX_USAGE)
}

fn check(sources: &Sources) -> ExitCode {
    match config::load(sources) {
        Ok(cfg) => {
            let what = cfg
                .source
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "built-in defaults".into());
            let listen: Vec<String> = cfg
                .listen
                .iter()
                .map(|l| match (l.tls, l.redirect_https) {
                    (true, _) => format!("{} (TLS)", l.addr),
                    (_, true) => format!("{} (redirect to https)", l.addr),
                    _ => l.addr.to_string(),
                })
                .collect();
            println!(
                "ruchy-serve: configuration {what} is valid: root {}, listen {}",
                cfg.served(),
                listen.join(", ")
            );
            let sites = std::iter::once(("the top-level site".to_string(), &cfg.locations)).chain(
                cfg.sites
                    .iter()
                    .map(|s| (format!("site {}", s.names.label()), &s.config.locations)),
            );
            if !cfg.default_site && !cfg.locations.is_empty() {
                eprintln!(
                    "ruchy-serve: warning: the top-level [[locations]] belong to the default site, \
                     and default_site = false: they can never apply (move them into a [[sites]] \
                     entry as [[sites.locations]])"
                );
            }
            for (site, locations) in sites {
                if locations.is_empty() {
                    continue;
                }
                println!("ruchy-serve: locations of {site}, in the order tried:");
                for (i, written) in locations.in_order() {
                    println!("  locations[{i}] {written}");
                }
                for w in &locations.warnings {
                    eprintln!("ruchy-serve: warning: {w}");
                }
            }
            for c in &cfg.tls.store.certs {
                let site = match &c.spec.site {
                    Some(s) => format!(" (site {s})"),
                    None => String::new(),
                };
                let acme = match c.spec.source {
                    ruchy_serve::tls::Source::Acme => ", from ACME",
                    ruchy_serve::tls::Source::File => "",
                };
                println!(
                    "ruchy-serve: certificate {}{site} for {}: serial {}, expires {} ({} days){acme}",
                    c.spec.cert.display(),
                    c.names.join(", "),
                    c.serial,
                    c.not_after_text(),
                    c.days_left()
                );
                if c.days_left() < 14 {
                    eprintln!(
                        "ruchy-serve: warning: certificate {} expires in {} days (hint: renew it; ruchy-serve picks up new files without a restart)",
                        c.spec.cert.display(),
                        c.days_left()
                    );
                }
            }
            for f in cfg.tls.store.failed.iter().filter(|f| f.pending) {
                println!(
                    "ruchy-serve: certificate for {} (site {}): from ACME ({}), not obtained yet: ordered at start",
                    f.spec.names.join(", "),
                    f.spec.site.as_deref().unwrap_or("-"),
                    cfg.acme.as_ref().map_or("", |a| a.directory.as_str()),
                );
            }
            // A certificate that cannot serve does not stop the server (its
            // names fail their handshakes, the rest serve), so `check`
            // passes, loudly.
            for p in cfg.tls.store.problems() {
                eprintln!("ruchy-serve: warning: {}", p.message);
            }
            for w in ruchy_serve::serve::headers::compression_type_warnings(
                cfg.compression.types(),
                &cfg.files.mime_types,
            ) {
                eprintln!("ruchy-serve: warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail_config(e),
    }
}

fn explain(sources: &Sources, q: ruchy_serve::explain::Question) -> ExitCode {
    let cfg = match config::load(sources) {
        Ok(c) => std::sync::Arc::new(c),
        Err(e) => return fail_config(e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ruchy-serve: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ruchy_serve::explain::explain(cfg, &q)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ruchy-serve: explain: {e}");
            ExitCode::from(EX_USAGE)
        }
    }
}

fn print_config(sources: &Sources) -> ExitCode {
    let layered = match Layered::new(sources) {
        Ok(l) => l,
        Err(e) => return fail_config(e),
    };
    let rows = layered.provenance();
    let width = rows
        .iter()
        .map(|(k, v, _)| k.len() + v.len() + 3)
        .max()
        .unwrap_or(0);
    for (key, value, origin) in rows {
        let line = format!("{key} = {value}");
        println!("{line:width$}  # {origin}");
    }
    // Printing is useful even for a broken config; the exit code still tells.
    match config::validate(&layered) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail_config(e),
    }
}

fn serve(sources: &Sources) -> ExitCode {
    let cfg = match config::load(sources) {
        Ok(c) => c,
        Err(e) => return fail_config(e),
    };
    let root_warning = match privileges::check(&cfg, privileges::euid()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("ruchy-serve: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    // Before any thread exists: this edits the environment.
    let inherited = match Inherited::from_env() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("ruchy-serve: cannot take the sockets systemd passed (LISTEN_FDS): {e}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(&cfg.log);
    if let Some(w) = root_warning {
        tracing::warn!("{w}");
    }
    let runtime = match runtime(cfg.workers, cfg.blocking_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ruchy-serve: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // Handlers first: nothing may be announced before SIGHUP is caught.
        let signals = match lifecycle::Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("ruchy-serve: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let server = match lifecycle::Server::bind(cfg, sources.clone(), inherited) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("ruchy-serve: {e}");
                return ExitCode::FAILURE;
            }
        };
        let (events, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(signals.forward(events));
        server.run(rx).await;
        ExitCode::SUCCESS
    })
}

/// The tokio runtime for `workers` threads (0: one per core the process may
/// run on). One worker gets tokio's current-thread scheduler: no work-stealing
/// queues or cross-thread wake-ups to pay for when there is nobody to steal
/// from.
///
/// The blocking pool is bounded by `blocking` (tokio's default is 512): on
/// a site larger than the page cache, misses would otherwise start a
/// thread each, and hundreds of threads on a few cores spend the time
/// switching between themselves (benches/README.md, w12).
fn runtime(workers: usize, blocking: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(blocking)
            .enable_all()
            .build();
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if workers > 1 {
        b.worker_threads(workers);
    }
    b.max_blocking_threads(blocking).enable_all().build()
}
