//! `cairn serve --config FILE`: settings from a TOML file, under the
//! environment and the command line.
//!
//! The file's settings are turned into the flags they name and put in the
//! command line before clap reads it — only those no flag on the command
//! line and no `CAIRN_*` variable already sets — so one parser, with one set
//! of checks and error messages, reads all three, and precedence is flag >
//! environment > file > default.

use std::ffi::OsString;

use anyhow::Context as _;
use clap::CommandFactory;

use super::Cli;

/// The arguments `cairn` was started with, with the settings of `serve
/// --config FILE` (or `CAIRN_CONFIG`) added where neither a flag nor the
/// environment sets them. Other commands pass through untouched.
pub fn with_config_file(
    args: Vec<OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<OsString>> {
    let Some(serve_at) = subcommand_at(&args).filter(|at| args[*at] == "serve") else {
        return Ok(args);
    };
    // Global flags may come before `serve`: they count as given too.
    let given: Vec<String> = args[1..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let path = match flag_value(&given, "config") {
        Some(path) => path,
        None => match env("CAIRN_CONFIG").filter(|p| !p.is_empty()) {
            Some(path) => path,
            None => return Ok(args),
        },
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("--config {path}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| anyhow::anyhow!("--config {path}: {e}"))?;
    let added = file_flags(&table, &given, env).with_context(|| format!("--config {path}"))?;
    let mut merged = args;
    let tail = merged.split_off(serve_at + 1);
    merged.extend(added.into_iter().map(OsString::from));
    merged.extend(tail);
    Ok(merged)
}

/// Where the subcommand is: the first argument that is neither a global
/// flag nor its value (so `cairn get t serve` is not `serve`).
fn subcommand_at(args: &[OsString]) -> Option<usize> {
    let root = Cli::command();
    let takes_value = |flag: &str| {
        root.get_arguments().any(|a| {
            a.get_long().is_some_and(|l| format!("--{l}") == flag) && a.get_action().takes_values()
        })
    };
    let mut at = 1;
    while let Some(arg) = args.get(at) {
        let text = arg.to_string_lossy();
        if !text.starts_with('-') {
            return Some(at);
        }
        at += if !text.contains('=') && takes_value(&text) {
            2
        } else {
            1
        };
    }
    None
}

/// The value of `--NAME VALUE` or `--NAME=VALUE` among `given`.
fn flag_value(given: &[String], name: &str) -> Option<String> {
    let long = format!("--{name}");
    let with_equals = format!("--{name}=");
    let mut iter = given.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            return None;
        }
        if *arg == long {
            return iter.next().cloned();
        }
        if let Some(value) = arg.strip_prefix(&with_equals) {
            return Some(value.to_owned());
        }
    }
    None
}

/// The flags the file's settings stand for, leaving out any the command
/// line or the environment sets. A name that is no setting is an error (a
/// typo must not be silently ignored).
fn file_flags(
    table: &toml::Table,
    given: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<String>> {
    let root = Cli::command();
    let serve = root
        .find_subcommand("serve")
        .ok_or_else(|| anyhow::anyhow!("no serve command"))?;
    let settings: Vec<&clap::Arg> = serve
        .get_arguments()
        .chain(root.get_arguments())
        .filter(|a| {
            a.get_long()
                .is_some_and(|l| l != "config" && l != "print-config")
        })
        .collect();
    let mut flags = Vec::new();
    for (name, value) in table {
        let long = name.replace('_', "-");
        let long = if long == "seeds" {
            "seed".to_owned()
        } else {
            long
        };
        let Some(arg) = settings
            .iter()
            .find(|a| a.get_long() == Some(long.as_str()))
        else {
            let known: Vec<&str> = settings.iter().filter_map(|a| a.get_long()).collect();
            anyhow::bail!(
                "unknown setting {name:?}; settings are: {}",
                known.join(", ")
            );
        };
        let on_command_line = given
            .iter()
            .take_while(|a| *a != "--")
            .any(|a| *a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
        let in_environment = arg
            .get_env()
            .and_then(|var| env(&var.to_string_lossy()))
            .is_some_and(|v| !v.is_empty());
        if on_command_line || in_environment {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<Vec<_>, _>>(),
            other => scalar(other).map(|v| vec![v]),
        }
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let takes_value = arg.get_action().takes_values();
        for value in values {
            if takes_value {
                flags.push(format!("--{long}={value}"));
            } else if value == "true" {
                flags.push(format!("--{long}"));
            }
        }
    }
    Ok(flags)
}

/// A setting's value as its flag would be written.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        other => Err(format!(
            "a setting is a string, number, boolean or a list of them, not {}",
            other.type_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `cairn serve ARGS --config FILE` merged with `env`, then parsed
    /// (the real environment holds no `CAIRN_*` setting in tests).
    fn parse(
        args: &[&str],
        env: &[(&str, &str)],
        file: &str,
    ) -> (Vec<String>, super::super::ServeArgs) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cairn-config-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cairn.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = vec!["cairn".into(), "serve".into()];
        argv.extend(args.iter().map(OsString::from));
        argv.push("--config".into());
        argv.push(path.as_os_str().to_owned());
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let merged = with_config_file(argv, lookup).unwrap();
        let text = merged
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        match Cli::try_parse_from(merged).unwrap().command {
            super::super::Command::Serve(args) => (text, *args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_file_fills_only_what_neither_a_flag_nor_the_environment_sets() {
        let file = r#"
            node-id = "from-file"
            data_dir = "/var/lib/cairn"
            http = "0.0.0.0:1111"
            peer = "0.0.0.0:2222"
            partitions = 128
            seed = ["10.0.0.1:9080", "10.0.0.2:9080"]
        "#;
        let (argv, args) = parse(
            &["--http", "127.0.0.1:3333"],
            &[("CAIRN_PEER", "0.0.0.0:5555")],
            file,
        );
        assert_eq!(args.http, "127.0.0.1:3333", "the flag, not the file");
        assert!(
            !argv.iter().any(|a| a.starts_with("--peer")),
            "the environment sets the peer address: the file must not: {argv:?}"
        );
        assert_eq!(args.node_id, "from-file");
        assert_eq!(args.partitions, 128);
        assert_eq!(args.seeds, vec!["10.0.0.1:9080", "10.0.0.2:9080"]);
        assert_eq!(args.data_dir, std::path::PathBuf::from("/var/lib/cairn"));
        assert_eq!(args.target_n, 3, "nothing sets it: the default");
    }

    #[test]
    fn seeds_on_the_command_line_replace_the_files_list() {
        let file = "node-id = \"n\"\ndata-dir = \"/d\"\nseed = [\"10.0.0.1:9080\"]\n";
        let (_, args) = parse(&["--seed", "10.9.9.9:9080"], &[], file);
        assert_eq!(args.seeds, vec!["10.9.9.9:9080"]);
    }

    #[test]
    fn an_unknown_setting_or_a_table_value_is_refused_by_name() {
        let table: toml::Table = "node-idd = \"x\"".parse().unwrap();
        let e = file_flags(&table, &[], |_| None).unwrap_err().to_string();
        assert!(e.contains("unknown setting \"node-idd\""), "{e}");
        let table: toml::Table = "[http]\nport = 1".parse().unwrap();
        let e = file_flags(&table, &[], |_| None).unwrap_err().to_string();
        assert!(e.contains("http"), "{e}");
    }

    #[test]
    fn other_commands_pass_through() {
        let config = |name: &str| (name == "CAIRN_CONFIG").then(|| "/nonexistent.toml".to_owned());
        for argv in [
            vec!["cairn", "get", "t", "k"],
            vec!["cairn", "get", "t", "serve"],
            vec!["cairn", "--log-format", "json", "put", "serve", "v"],
        ] {
            let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
            assert_eq!(with_config_file(argv.clone(), config).unwrap(), argv);
        }
    }

    #[test]
    fn a_global_flag_before_serve_is_not_added_again_from_the_file() {
        let file = "node-id = \"n\"\ndata-dir = \"/d\"\nlog-format = \"json\"\n";
        let dir = std::env::temp_dir().join(format!("cairn-config-global-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, file).unwrap();
        let argv: Vec<OsString> = ["cairn", "--log-format", "pretty", "serve", "--config"]
            .iter()
            .map(OsString::from)
            .chain(std::iter::once(path.into_os_string()))
            .collect();
        let merged = with_config_file(argv, |_| None).unwrap();
        let cli = Cli::try_parse_from(&merged).unwrap();
        assert_eq!(
            cli.log_format,
            super::super::LogFormat::Pretty,
            "{merged:?}"
        );
    }
}
