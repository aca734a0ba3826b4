//! The `turnout` command: run the proxy, check a config, or start a demo.

mod ctl;
mod demo;
mod logwriter;
mod plan;
mod report;
mod traffic;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use turnout_config::Config;
use turnout_control::controller::Controller;
use turnout_control::{Phase, Side};
use turnout_proxy::admin::Window;

#[derive(Parser)]
#[command(
    name = "turnout",
    version,
    about = "Wire-protocol proxy for live database cutovers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a config file.
    Run {
        /// Path of the TOML config.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Parse and validate a config file; print every problem found.
    CheckConfig {
        /// Path of the TOML config (or --config FILE, as elsewhere).
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// Path of the TOML config.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Also log in to both backends as configured and read their
        /// catalogs, as turnout does before it serves a mirroring phase.
        #[arg(long)]
        connect: bool,
    },
    /// Send a command to a running turnout's admin socket: status,
    /// flip reads, rollback (changes take --dry-run).
    #[command(after_help = ctl::COMMANDS)]
    Ctl {
        /// The admin socket (admin.socket of the config).
        #[arg(long, conflicts_with = "config")]
        socket: Option<PathBuf>,
        /// Find the admin socket in this config file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print the JSON reply as it is.
        #[arg(long)]
        json: bool,
        /// The command, e.g. `status` or `flip reads --dry-run`.
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Can I flip? The report of the read-diff report, the divergence log
    /// and, with --config of a running turnout, its guards, backfill and
    /// verify: a verdict, then tables, then query fingerprints, and a timeline.
    Report {
        /// The `sampling.report` file (from --config when left out).
        file: Option<PathBuf>,
        /// A config: its report and divergence log files, its guards, and its
        /// admin socket (the live status, backfill and verify, when reachable).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The divergence log (`mirror.divergence_log`), when not from --config.
        #[arg(long)]
        divergences: Option<PathBuf>,
        /// table (also: terminal, text), json, or html (one self-contained page).
        #[arg(long, default_value = "table")]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Exit with 1 when the verdict is NO-GO (for scripts and CI gates).
        #[arg(long)]
        check: bool,
    },
    /// Read both catalogs and the config; print the migration's runbook:
    /// schema difference, risks, phases with their commands, what to watch.
    Plan {
        /// Path of the TOML config.
        #[arg(short, long)]
        config: PathBuf,
        /// text or json.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Start throwaway PostgreSQL clusters (or MariaDB servers) for `old`
    /// and `new`, old with a sample schema and rows, new with the changed
    /// schema a `[mapping]` describes, and run turnout in front of them in
    /// phase mirror until Ctrl-C: `turnout plan` then walks the cutover.
    Demo {
        /// Port for turnout's listener (default: a free one).
        #[arg(long)]
        port: Option<u16>,
        /// MariaDB servers and the MySQL protocol instead of PostgreSQL.
        #[arg(long)]
        mysql: bool,
        /// Run a small application against turnout meanwhile: reads by key
        /// (compared on new, which the flip guards want) and writes, a few
        /// a second, written with old's names all along.
        #[arg(long)]
        traffic: bool,
    },
}

/// `check-config FILE [--connect]`.
fn check_config(file: &std::path::Path, connect: bool) -> ExitCode {
    match turnout_config::load(file) {
        Ok(c) => {
            println!(
                "{}: ok (protocol {:?}, listen {}, old {}, new {}, {} user(s))",
                file.display(),
                c.protocol,
                c.listen.address,
                c.backends.old.address(),
                c.backends.new.address(),
                c.users.len()
            );
            if !connect {
                return ExitCode::SUCCESS;
            }
            let Some(rt) = runtime(&c) else {
                return ExitCode::FAILURE;
            };
            rt.block_on(check_backends(&c))
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig {
            file,
            config,
            connect,
        } => {
            let Some(file) = file.or(config) else {
                eprintln!(
                    "turnout check-config: say which config: check-config FILE or --config FILE"
                );
                return ExitCode::from(2);
            };
            check_config(&file, connect)
        }
        Command::Run { config } => {
            let config_path = config;
            let config = match turnout_config::load(&config_path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&config.log.level, config.log.format);
            let Some(rt) = runtime(&config) else {
                return ExitCode::FAILURE;
            };
            rt.block_on(run(config, config_path))
        }
        Command::Ctl {
            socket,
            config,
            json,
            command,
        } => ctl::run(socket, config, json, &command.join(" ")),
        Command::Report {
            file,
            config,
            divergences,
            format,
            output,
            check,
        } => {
            let text = format
                .parse::<report::Format>()
                .map_err(|e| format!("--format: {e}"))
                .and_then(|f| {
                    let mut sources = match &config {
                        Some(path) => turnout_config::load(path)
                            .map(|c| report::Sources::from_config(&c))
                            .map_err(|e| e.to_string())?,
                        None => report::Sources::default(),
                    };
                    if file.is_some() {
                        sources.reads = file.clone();
                    }
                    if divergences.is_some() {
                        sources.divergences = divergences.clone();
                    }
                    if sources.reads.is_none() && sources.divergences.is_none() {
                        return Err("say what to report on: a read-diff report file, --divergences FILE, or --config FILE".into());
                    }
                    report::render(&sources, f, output.as_deref())
                });
            let (text, go) = match text {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("turnout report: {e}");
                    return ExitCode::from(2);
                }
            };
            let verdict = if check && !go {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
            match output {
                None => {
                    print!("{text}");
                    verdict
                }
                Some(path) => match turnout_control::files::create(&path)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
                {
                    Ok(()) => verdict,
                    Err(e) => {
                        eprintln!("turnout report: {}: {e}", path.display());
                        ExitCode::FAILURE
                    }
                },
            }
        }
        Command::Plan { config, format } => plan::run(&config, &format),
        Command::Demo {
            port,
            mysql,
            traffic,
        } => {
            init_logging("warn", turnout_config::LogFormat::Text);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("turnout: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(demo::run(port, mysql, traffic))
        }
    }
}

fn init_logging(level: &str, format: turnout_config::LogFormat) {
    let level = level.parse().unwrap_or(tracing::Level::INFO);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(|| logwriter::EscapingStderr)
        .with_ansi(false)
        .with_target(false);
    match format {
        turnout_config::LogFormat::Text => builder.init(),
        turnout_config::LogFormat::Json => builder.event_format(logwriter::JsonEvents).init(),
    }
}

fn runtime(config: &Config) -> Option<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if config.limits.worker_threads > 0 {
        b.worker_threads(config.limits.worker_threads as usize);
    }
    match b.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("turnout: cannot start the runtime: {e}");
            None
        }
    }
}

/// `check-config --connect`: logs in to both backends and reads their
/// catalogs; each side's result printed, non-zero when one failed.
async fn check_backends(config: &Config) -> ExitCode {
    let routing = Arc::new(turnout_control::RoutingState::new(Phase::Mirror, 0));
    let shared = match turnout_proxy::server::Shared::new(
        &config.without_outputs(),
        routing,
        turnout_proxy::adapter_for(config.protocol),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("turnout: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    for (_, checked) in turnout_proxy::backend_check::check(&shared, &[Side::Old, Side::New]).await
    {
        match checked {
            Ok(line) => println!("{line}"),
            Err(why) => {
                failed = true;
                eprintln!("turnout: {why}");
            }
        }
    }
    // The two schemas: what writes mirrored to new would not find there.
    if !failed {
        let (old, new) = tokio::join!(
            turnout_proxy::catalog::read_all(shared.backends(), Side::Old),
            turnout_proxy::catalog::read_all(shared.backends(), Side::New)
        );
        match (old, new) {
            (Ok(old), Ok(new)) => {
                let mut problems =
                    turnout_proxy::mapping::catalog::problems(&config.mapping, &old, &new);
                let (more, notes) =
                    turnout_proxy::mapping::catalog::unmapped_problems(&config.mapping, &old, &new);
                problems.extend(more);
                for n in &notes {
                    println!("  note: {n}");
                }
                if problems.is_empty() {
                    println!(
                        "schemas: new has every table and column of old's (through the mapping)"
                    );
                } else {
                    failed = true;
                    eprintln!("turnout: the schemas differ where mirrored writes would fail or mean something else:");
                    for p in &problems {
                        eprintln!("  - {p}");
                    }
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                failed = true;
                eprintln!("turnout: {e}");
            }
        }
    }
    // The mirror's source, with old the authority (as mirroring begins).
    let shared = Arc::new(shared);
    if let (false, Some(log)) = (failed, shared.adapter.log()) {
        match log.check(&shared, Side::Old).await {
            Ok((line, notes)) => {
                println!("{line}");
                for note in notes {
                    println!("  - {note}");
                }
            }
            Err(why) => {
                failed = true;
                eprintln!("turnout: {why}");
            }
        }
    }
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Checks the backends `phase` needs ([`turnout_proxy::backend_check`]);
/// `Some(exit code)` when turnout must not start. `resumed`: the phase is
/// the one a state file kept (a restart, not an operator entering it): then
/// an unreachable backend is logged and turnout serves as it did before it
/// stopped, the mirror's misses recorded, rather than leave every client
/// without a proxy because one side is down.
async fn backends_for(
    config: &Config,
    routing: Arc<turnout_control::RoutingState>,
    phase: Phase,
    resumed: bool,
) -> Option<ExitCode> {
    let shared = match turnout_proxy::server::Shared::new(
        config,
        routing,
        turnout_proxy::adapter_for(config.protocol),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("turnout: {e}");
            return Some(ExitCode::FAILURE);
        }
    };
    let sides: Vec<Side> = match phase.mirror() {
        Some(m) => vec![m.other(), m],
        None => vec![phase.authority()],
    };
    let mut failed = Vec::new();
    for (_, checked) in turnout_proxy::backend_check::check(&shared, &sides).await {
        match checked {
            Ok(line) => tracing::info!("{line}"),
            Err(why) => failed.push(why),
        }
    }
    if failed.is_empty() {
        return None;
    }
    if phase.mirror().is_some() && !resumed {
        eprintln!(
            "turnout: a backend cannot be used; turnout does not enter {phase} until it can:"
        );
        for why in &failed {
            eprintln!("  - {why}");
        }
        return Some(ExitCode::from(2));
    }
    for why in &failed {
        if resumed && phase.mirror().is_some() {
            tracing::error!("{why}; turnout serves in {phase} as it was left: what the mirror misses is recorded, and clients get this error from the authority until it can be reached");
        } else {
            tracing::error!("{why}; clients will get this error until it can be reached");
        }
    }
    None
}

/// turnout refused to enter its first phase: the state file this start
/// wrote goes, so the next start checks again as a first entry rather than
/// resume a phase that was never entered.
fn forget_first_entry(config: &Config, resumed: bool) {
    if let (false, Some(file)) = (resumed, config.state.file.as_deref()) {
        let _ = std::fs::remove_file(file);
    }
}

/// Serves until SIGINT or SIGTERM.
async fn run(config: Config, config_path: PathBuf) -> ExitCode {
    turnout_control::files::set_group_readable(config.log.group_readable);
    match turnout_proxy::metrics::raise_open_files_limit() {
        Ok((soft, _)) => tracing::info!(open_files = soft, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
    // Validation accepted the name, so it parses.
    let phase = config
        .state
        .initial_phase
        .as_deref()
        .and_then(|p| p.parse::<Phase>().ok())
        .unwrap_or(Phase::Passthrough);
    let g = &config.guards;
    let limits = turnout_proxy::admin::guard_limits(g);
    // A state file already there: turnout resumes the phase it keeps.
    let resumed = config.state.file.as_deref().is_some_and(|f| f.exists());
    // In a fleet: the phase the fleet committed, read before anything is
    // served.
    let committed = match turnout_proxy::flip::fleet::committed(&config, phase).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("turnout: {e}");
            return ExitCode::from(2);
        }
    };
    let (state, audit) = (
        config.state.file.as_deref(),
        config.admin.audit_log.as_deref(),
    );
    // In a fleet the fleet's phase is the one to resume: the state file
    // only keeps it.
    let in_fleet = committed.is_some();
    let started = match committed {
        Some(saved) => Controller::start_at(saved, state, audit, limits),
        None => Controller::start(phase, state, audit, limits),
    };
    let controller = match started {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("turnout: {e}");
            return ExitCode::from(2);
        }
    };
    let kept = controller.routing().snapshot().phase;
    if let (true, false, Some(configured)) =
        (resumed, in_fleet, config.state.initial_phase.as_deref())
    {
        if configured != kept.name() {
            let file = config
                .state
                .file
                .as_deref()
                .unwrap_or(std::path::Path::new("?"));
            let line = format!(
                "state.initial_phase = \"{configured}\" is not used: the state file {} keeps phase {kept}, and a restart resumes it (move on with turnout ctl; to start over, stop turnout and remove the state file)",
                file.display()
            );
            eprintln!("turnout: {line}");
            tracing::warn!("{line}");
        }
    }
    let phase = kept;
    if phase.mirror().is_some() && config.mirror.divergence_log.is_none() {
        tracing::warn!("mirroring without mirror.divergence_log: divergences go to this log only");
    }
    // The backends the phase needs are reached and logged in to before
    // anything is served (the listener's port open means ready): in a
    // mirroring phase both, or turnout does not start.
    if let Some(code) = backends_for(&config, controller.routing().clone(), phase, resumed).await {
        forget_first_entry(&config, resumed);
        return code;
    }
    // The admin socket is bound before the listener: once clients can
    // connect, `turnout ctl` can too (commands wait until it serves).
    let admin = match &config.admin.socket {
        Some(path) => match turnout_proxy::admin::Admin::bind(path, &config.admin.allowed_uids) {
            Ok(admin) => Some(admin),
            Err(e) => {
                eprintln!("turnout: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let server = match turnout_proxy::Server::bind(&config, controller.routing().clone()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("turnout: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A schema mapping is checked against both catalogs before any write
    // is mirrored through it.
    if phase.mirror().is_some() && !config.mapping.tables.is_empty() {
        let shared = server.shared();
        let checked = turnout_proxy::catalog::check(shared.backends(), &config.mapping).await;
        if let Ok(columns) = &checked {
            let mut live = (*shared.live()).clone();
            live.mapping = Arc::new((*live.mapping).clone().with_old_columns(columns.clone()));
            shared.set_live(live);
        }
        if let Err(problems) = checked {
            eprintln!(
                "turnout: the schema mapping does not match the databases; turnout does not enter {phase} until it does:"
            );
            for p in &problems {
                eprintln!("  - {p}");
            }
            forget_first_entry(&config, resumed);
            return ExitCode::from(2);
        }
    }
    let window = Window::new(std::time::Duration::from_secs(g.window_secs));
    let _window = tokio::spawn(window.clone().track(server.shared().clone()));
    let _metrics = match &config.metrics.address {
        Some(address) => {
            let protocol = match config.protocol {
                turnout_config::Protocol::Postgres => "postgres",
                turnout_config::Protocol::Mysql => "mysql",
            };
            let handle = match turnout_proxy::metrics::install(protocol) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("turnout: metrics: {e}");
                    forget_first_entry(&config, resumed);
                    return ExitCode::FAILURE;
                }
            };
            let listener = match tokio::net::TcpListener::bind(address).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("turnout: metrics.address: cannot listen on {address}: {e}");
                    forget_first_entry(&config, resumed);
                    return ExitCode::from(2);
                }
            };
            let health = Arc::new(turnout_proxy::metrics::Health::default());
            Some((
                tokio::spawn(turnout_proxy::metrics::serve(
                    listener,
                    handle,
                    health.clone(),
                    controller.routing().clone(),
                )),
                tokio::spawn(turnout_proxy::metrics::track(
                    server.shared().clone(),
                    controller.clone(),
                    window.clone(),
                )),
                tokio::spawn(health.track(server.shared().clone())),
            ))
        }
        None => None,
    };
    // The mirror's source: the authority's log when it allows it (and the
    // config does), made ready and its applier started before any client
    // writes, so nothing committed from here on is missed.
    if let Some(log) = server.shared().adapter.log() {
        // In a fleet the store says whether this instance leads the
        // applier or follows it (PostgreSQL).
        let taken = match in_fleet {
            true => {
                turnout_proxy::flip::fleet_log::take_role_at_start(server.shared(), phase).await
            }
            false => Ok(None),
        };
        let started = match taken {
            Ok(Some(line)) => Ok(line),
            Ok(None) => log.start(server.shared(), phase, resumed).await,
            Err(e) => Err(e),
        };
        match started {
            Ok(line) => tracing::info!("{line}"),
            Err(e) => {
                eprintln!("turnout: {e}; turnout does not enter {phase} until it can");
                forget_first_entry(&config, resumed);
                return ExitCode::from(2);
            }
        }
    }
    // A backfill the last run left running goes on from its checkpoint.
    server
        .shared()
        .backfill
        .resume_at_start(&server.shared().jobs());
    let _flag = config.admin.flag_file.clone().map(|path| {
        tokio::spawn(turnout_proxy::admin::watch_flag_file(
            path,
            server.shared().clone(),
            controller.clone(),
            window.clone(),
        ))
    });
    // SIGHUP reloads the config, as the admin command does.
    let _hup = {
        let shared = server.shared().clone();
        let controller = controller.clone();
        let window = window.clone();
        let config_path = config_path.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                let ctx = turnout_proxy::admin::Context {
                    shared: &shared,
                    controller: &controller,
                    window: &window,
                    config_path: &config_path,
                };
                turnout_proxy::admin::reload(&ctx, false, "SIGHUP").await;
            }
        })
    };
    let _fleet = tokio::spawn(turnout_proxy::flip::fleet::agent(
        server.shared().clone(),
        controller.clone(),
    ));
    let _admin = admin.map(|admin| {
        tokio::spawn(admin.serve(
            server.shared().clone(),
            controller.clone(),
            window.clone(),
            config_path.clone(),
        ))
    });
    match server.local_addr() {
        Ok(addr) => tracing::info!(%addr, %phase, "turnout listening"),
        Err(e) => tracing::warn!(error = %e, "listening, address unknown"),
    }
    let shared_at_stop = server.shared().clone();
    let signal = std::sync::Arc::new(std::sync::Mutex::new(Stop::Term));
    let seen = signal.clone();
    let drained = server
        .serve(async move {
            let s = shutdown_signal().await;
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = s;
        })
        .await;
    turnout_proxy::flip::fleet::leave(&shared_at_stop).await;
    let by = *signal.lock().unwrap_or_else(|p| p.into_inner());
    exit_code(by, &drained)
}

/// What stopped turnout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Term,
    Int,
}

/// The exit code of a stop: 0 after SIGTERM, 130 after SIGINT (128 + 2, as
/// shells report it), 3 when either had to cut sessions or queued mirror
/// statements short at the deadline (logged and in the divergence log).
fn exit_code(by: Stop, drained: &turnout_proxy::server::Drained) -> ExitCode {
    if !drained.clean() {
        tracing::warn!(
            sessions_cut = drained.sessions_cut,
            queued_lost = drained.queued_lost,
            "stopped after cutting work short at the deadline (exit code 3)"
        );
        return ExitCode::from(3);
    }
    match by {
        Stop::Term => ExitCode::SUCCESS,
        Stop::Int => ExitCode::from(130),
    }
}

pub(crate) async fn shutdown_signal() -> Stop {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return Stop::Int;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("SIGINT: stopping");
            Stop::Int
        }
        _ = term.recv() => {
            tracing::info!("SIGTERM: stopping");
            Stop::Term
        }
    }
}
