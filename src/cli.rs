//! The command line: commands, their flags, and the global options, parsed into a `Cli` value.
//! Pure (arguments in, value out) so it is table-tested; knows nothing of what the commands do.

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "\
watch-docker: keeps the containers of a Docker host up to date

Usage: watch-docker <COMMAND> [OPTIONS]

Commands:
  serve          run the daemon: HTTP API and scheduler
  check          scan once and print each container's status   [--json] [--fail-on-update] [--fail-on-error] [NAME...]
  update         update containers now                          [--dry-run] [--all | NAME...]
  list           list containers and images, no registry traffic [--json]
  config         validate and print the effective configuration (secrets masked)
  healthcheck    exit 0 when the local daemon's /healthz answers

Options (every command):
  -c, --config FILE      configuration file (default ./config.yaml if present; env WATCH_CONFIG)
      --set KEY=VALUE    override one key, e.g. --set scan.interval=5m (repeatable)
      --addr ADDR        same as --set server.addr=ADDR
      --docker-host URL  same as --set docker.host=URL
      --log-level LEVEL  same as --set logging.level=LEVEL
      --log-format FMT   same as --set logging.format=FMT
  -h, --help             print this help
  -V, --version          print the version

Exit codes: 0 done; 1 could not run; 2 usage or config error; 3 updates available (check
--fail-on-update); 4 containers in Error (check --fail-on-error) or failed updates (update).
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve,
    Check {
        json: bool,
        fail_on_update: bool,
        fail_on_error: bool,
        names: Vec<String>,
    },
    Update {
        dry_run: bool,
        all: bool,
        names: Vec<String>,
    },
    List {
        json: bool,
    },
    Config,
    Healthcheck,
    Help,
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    pub command: Command,
    pub config_file: Option<PathBuf>,
    /// Dotted-key overrides from flags, applied after the file and the environment.
    pub overrides: Vec<(String, String)>,
}

/// A usage error: one line for stderr, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (see watch-docker --help)", self.0)
    }
}

impl std::error::Error for UsageError {}

impl From<lexopt::Error> for UsageError {
    fn from(e: lexopt::Error) -> Self {
        UsageError(e.to_string())
    }
}

fn string(v: OsString) -> Result<String, UsageError> {
    v.into_string()
        .map_err(|v| UsageError(format!("argument {v:?} is not valid UTF-8")))
}

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Cli, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut command: Option<String> = None;
    let mut config_file = None;
    let mut overrides = Vec::new();
    let (mut json, mut fail_on_update, mut fail_on_error, mut dry_run, mut all) =
        (false, false, false, false, false);
    let mut names = Vec::new();
    let mut help = false;
    let mut version = false;

    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => help = true,
            Short('V') | Long("version") => version = true,
            Short('c') | Long("config") => config_file = Some(PathBuf::from(p.value()?)),
            Long("set") => {
                let kv = string(p.value()?)?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| UsageError(format!("--set {kv:?}: expected KEY=VALUE")))?;
                overrides.push((k.trim().to_string(), v.to_string()));
            }
            Long("addr") => overrides.push(("server.addr".into(), string(p.value()?)?)),
            Long("docker-host") => overrides.push(("docker.host".into(), string(p.value()?)?)),
            Long("log-level") => overrides.push(("logging.level".into(), string(p.value()?)?)),
            Long("log-format") => overrides.push(("logging.format".into(), string(p.value()?)?)),
            Long("json") => json = true,
            Long("fail-on-update") => fail_on_update = true,
            Long("fail-on-error") => fail_on_error = true,
            Long("dry-run") => dry_run = true,
            Long("all") => all = true,
            Value(v) => {
                let v = string(v)?;
                if command.is_none() {
                    command = Some(v);
                } else {
                    names.push(v);
                }
            }
            _ => return Err(arg.unexpected().into()),
        }
    }

    let flag_allowed = |flag: bool, name: &str, allowed: &[&str]| -> Result<(), UsageError> {
        match (&command, flag) {
            (Some(c), true) if !allowed.contains(&c.as_str()) => {
                Err(UsageError(format!("{name} is not an option of `{c}`")))
            }
            _ => Ok(()),
        }
    };
    flag_allowed(json, "--json", &["check", "list"])?;
    flag_allowed(fail_on_update, "--fail-on-update", &["check"])?;
    flag_allowed(fail_on_error, "--fail-on-error", &["check"])?;
    flag_allowed(dry_run, "--dry-run", &["update"])?;
    flag_allowed(all, "--all", &["update"])?;

    let command = if help {
        Command::Help
    } else if version {
        Command::Version
    } else {
        let Some(c) = command else {
            return Err(UsageError("no command given".into()));
        };
        let no_names = |c: &str, names: &[String]| -> Result<(), UsageError> {
            match names.first() {
                Some(n) => Err(UsageError(format!("`{c}` takes no argument (got {n:?})"))),
                None => Ok(()),
            }
        };
        match c.as_str() {
            "serve" => no_names("serve", &names).map(|_| Command::Serve)?,
            "check" => Command::Check {
                json,
                fail_on_update,
                fail_on_error,
                names,
            },
            "update" => {
                if all && !names.is_empty() {
                    return Err(UsageError("`update`: give --all or names, not both".into()));
                }
                if !all && names.is_empty() {
                    return Err(UsageError(
                        "`update`: name the containers to update, or pass --all".into(),
                    ));
                }
                Command::Update {
                    dry_run,
                    all,
                    names,
                }
            }
            "list" => no_names("list", &names).map(|_| Command::List { json })?,
            "config" => no_names("config", &names).map(|_| Command::Config)?,
            "healthcheck" => no_names("healthcheck", &names).map(|_| Command::Healthcheck)?,
            other => return Err(UsageError(format!("unknown command {other:?}"))),
        }
    };
    Ok(Cli {
        command,
        config_file,
        overrides,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(args: &str) -> Cli {
        parse(args.split_whitespace()).unwrap_or_else(|e| panic!("{args}: {e}"))
    }

    fn err(args: &str) -> String {
        parse(args.split_whitespace()).unwrap_err().0
    }

    #[test]
    fn commands_and_flags() {
        assert_eq!(ok("serve").command, Command::Serve);
        assert_eq!(ok("list --json").command, Command::List { json: true });
        assert_eq!(
            ok("check --json --fail-on-update web db").command,
            Command::Check {
                json: true,
                fail_on_update: true,
                fail_on_error: false,
                names: vec!["web".into(), "db".into()]
            }
        );
        assert_eq!(
            ok("update --dry-run --all").command,
            Command::Update {
                dry_run: true,
                all: true,
                names: vec![]
            }
        );
        assert_eq!(ok("--help").command, Command::Help);
        assert_eq!(ok("serve --help").command, Command::Help);
        assert_eq!(ok("-V").command, Command::Version);
        assert_eq!(ok("healthcheck").command, Command::Healthcheck);
    }

    #[test]
    fn global_options_become_overrides() {
        let cli =
            ok("serve -c /etc/wd.yaml --addr 127.0.0.1:9 --set scan.interval=5m --log-level debug");
        assert_eq!(cli.config_file, Some(PathBuf::from("/etc/wd.yaml")));
        assert_eq!(
            cli.overrides,
            vec![
                ("server.addr".to_string(), "127.0.0.1:9".to_string()),
                ("scan.interval".to_string(), "5m".to_string()),
                ("logging.level".to_string(), "debug".to_string()),
            ]
        );
        assert_eq!(
            ok("config --config=x.yaml").config_file,
            Some("x.yaml".into())
        );
    }

    #[test]
    fn usage_errors_name_the_problem() {
        assert!(err("").contains("no command"));
        assert!(err("frobnicate").contains("unknown command \"frobnicate\""));
        assert!(err("serve --json").contains("--json is not an option of `serve`"));
        assert!(err("update").contains("--all"));
        assert!(err("update --all web").contains("not both"));
        assert!(err("list web").contains("takes no argument"));
        assert!(err("serve --bogus").contains("--bogus"));
        assert!(err("serve --set novalue").contains("KEY=VALUE"));
    }
}
