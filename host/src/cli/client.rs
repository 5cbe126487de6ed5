//! Client commands: thin wrappers over the HTTP API that print what a node answers.

use std::io::{Read, Write};

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Args, Subcommand};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

/// Options every client command takes.
#[derive(Debug, Args)]
pub struct Target {
    /// Any node's HTTP URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "CAIRN_URL")]
    pub url: String,
}

/// `cairn put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// Table.
    pub table: String,
    /// Key.
    pub key: String,
    /// Value; `-` or none reads stdin.
    pub value: Option<String>,
    /// Context token from an earlier get or put (supersedes what it covers).
    #[arg(long)]
    pub context: Option<String>,
    /// Content-Type stored with the value.
    #[arg(long, default_value = "application/octet-stream")]
    pub content_type: String,
    /// Write quorum for this request.
    #[arg(long)]
    pub w: Option<u8>,
    #[command(flatten)]
    pub target: Target,
}

/// `cairn get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Table.
    pub table: String,
    /// Key.
    pub key: String,
    /// Read quorum for this request.
    #[arg(long)]
    pub r: Option<u8>,
    #[command(flatten)]
    pub target: Target,
}

/// `cairn delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Table.
    pub table: String,
    /// Key.
    pub key: String,
    /// Context token: delete exactly what it covers.
    #[arg(long)]
    pub context: Option<String>,
    /// Write quorum for this request.
    #[arg(long)]
    pub w: Option<u8>,
    #[command(flatten)]
    pub target: Target,
}

/// `cairn table ...`.
#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Create a table, or change r, w or merge of an existing one.
    Create(TableCreateArgs),
    /// Show one table's config.
    Show {
        /// Table.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// List every table.
    List {
        #[command(flatten)]
        target: Target,
    },
}

/// `cairn table create`.
#[derive(Debug, Args)]
pub struct TableCreateArgs {
    /// Table name: [a-z0-9_-]{1,64}.
    pub name: String,
    /// Replicas per key (1-9).
    #[arg(long)]
    pub n: Option<u8>,
    /// Read quorum.
    #[arg(long)]
    pub r: Option<u8>,
    /// Write quorum.
    #[arg(long)]
    pub w: Option<u8>,
    /// lww | siblings | plugin.
    #[arg(long)]
    pub merge: Option<String>,
    /// The merge plugin's name (with --merge plugin).
    #[arg(long)]
    pub plugin: Option<String>,
    /// lmdb | memory.
    #[arg(long)]
    pub storage: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

/// `cairn cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members and their status as the node sees them.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Make the node at --url join the cluster of SEED (a member's peer address).
    Join {
        /// A member's peer address.
        seed: String,
        #[command(flatten)]
        target: Target,
    },
}

/// One HTTP exchange's outcome.
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Selected headers.
    pub context: Option<String>,
    /// Content-Type.
    pub content_type: Option<String>,
    /// Body.
    pub body: Vec<u8>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// Sends one request and reads the whole answer.
pub fn exchange(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<Answer> {
    let agent = agent();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(body.map(<[u8]>::to_vec).unwrap_or_default())?;
    let mut response = agent
        .run(request)
        .with_context(|| format!("{method} {url}"))?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let context = header("x-cairn-context");
    let content_type = header("content-type");
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()?;
    Ok(Answer {
        status,
        context,
        content_type,
        body,
    })
}

fn key_url(target: &Target, table: &str, key: &str, query: &str) -> String {
    let key = utf8_percent_encode(key, NON_ALPHANUMERIC);
    format!(
        "{}/tables/{table}/keys/{key}{query}",
        target.url.trim_end_matches('/')
    )
}

fn quorum_query(name: &str, value: Option<u8>) -> String {
    value.map(|v| format!("?{name}={v}")).unwrap_or_default()
}

fn fail_unless_ok(answer: &Answer) -> anyhow::Result<()> {
    if answer.status >= 400 {
        anyhow::bail!(
            "HTTP {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(())
}

/// `cairn put`.
pub fn put(args: &PutArgs) -> anyhow::Result<()> {
    let value = match args.value.as_deref() {
        None | Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        }
        Some(v) => v.as_bytes().to_vec(),
    };
    let mut headers = vec![("content-type", args.content_type.as_str())];
    if let Some(context) = &args.context {
        headers.push(("x-cairn-context", context));
    }
    let url = key_url(
        &args.target,
        &args.table,
        &args.key,
        &quorum_query("w", args.w),
    );
    let answer = exchange("PUT", &url, &headers, Some(&value))?;
    fail_unless_ok(&answer)?;
    println!("stored; context: {}", answer.context.unwrap_or_default());
    Ok(())
}

/// `cairn get`.
pub fn get(args: &GetArgs) -> anyhow::Result<()> {
    let url = key_url(
        &args.target,
        &args.table,
        &args.key,
        &quorum_query("r", args.r),
    );
    let answer = exchange("GET", &url, &[], None)?;
    match answer.status {
        200 => {
            std::io::stdout().write_all(&answer.body)?;
            if !answer.body.ends_with(b"\n") {
                println!();
            }
            eprintln!("content-type: {}", answer.content_type.unwrap_or_default());
            eprintln!("context: {}", answer.context.unwrap_or_default());
            Ok(())
        }
        300 => {
            let body: Value = serde_json::from_slice(&answer.body)?;
            let siblings = body["siblings"].as_array().cloned().unwrap_or_default();
            println!("{} siblings:", siblings.len());
            for sibling in siblings {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(sibling["value"].as_str().unwrap_or(""))?;
                println!(
                    "- [{}] {}",
                    sibling["timestamp_ms"],
                    String::from_utf8_lossy(&raw)
                );
            }
            println!("context: {}", body["context"].as_str().unwrap_or(""));
            Ok(())
        }
        404 => anyhow::bail!("not found"),
        _ => {
            fail_unless_ok(&answer)?;
            Ok(())
        }
    }
}

/// `cairn delete`.
pub fn delete(args: &DeleteArgs) -> anyhow::Result<()> {
    let mut headers = Vec::new();
    if let Some(context) = &args.context {
        headers.push(("x-cairn-context", context.as_str()));
    }
    let url = key_url(
        &args.target,
        &args.table,
        &args.key,
        &quorum_query("w", args.w),
    );
    let answer = exchange("DELETE", &url, &headers, None)?;
    fail_unless_ok(&answer)?;
    println!("deleted; context: {}", answer.context.unwrap_or_default());
    Ok(())
}

fn print_json(answer: &Answer) -> anyhow::Result<()> {
    fail_unless_ok(answer)?;
    let value: Value = serde_json::from_slice(&answer.body)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// `cairn table ...`.
pub fn table(command: &TableCommand) -> anyhow::Result<()> {
    match command {
        TableCommand::Create(args) => {
            let mut body = serde_json::Map::new();
            for (name, value) in [("n", args.n), ("r", args.r), ("w", args.w)] {
                if let Some(v) = value {
                    body.insert(name.into(), Value::from(v));
                }
            }
            for (name, value) in [
                ("merge", &args.merge),
                ("storage", &args.storage),
                ("plugin", &args.plugin),
            ] {
                if let Some(v) = value {
                    body.insert(name.into(), Value::from(v.as_str()));
                }
            }
            let url = format!(
                "{}/tables/{}",
                args.target.url.trim_end_matches('/'),
                args.name
            );
            let body = Value::Object(body).to_string();
            print_json(&exchange(
                "PUT",
                &url,
                &[("content-type", "application/json")],
                Some(body.as_bytes()),
            )?)
        }
        TableCommand::Show { name, target } => print_json(&exchange(
            "GET",
            &format!("{}/tables/{name}", target.url.trim_end_matches('/')),
            &[],
            None,
        )?),
        TableCommand::List { target } => print_json(&exchange(
            "GET",
            &format!("{}/tables", target.url.trim_end_matches('/')),
            &[],
            None,
        )?),
    }
}

/// `cairn cluster ...`.
pub fn cluster(command: &ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status { target } => {
            let answer = exchange(
                "GET",
                &format!("{}/cluster", target.url.trim_end_matches('/')),
                &[],
                None,
            )?;
            fail_unless_ok(&answer)?;
            let status: Value = serde_json::from_slice(&answer.body)?;
            println!("node {}", status["node"].as_str().unwrap_or("?"));
            println!(
                "{:<16} {:<22} {:<22} {:<8} PARTITIONS",
                "ID", "HTTP", "PEER", "STATUS"
            );
            for m in status["members"].as_array().cloned().unwrap_or_default() {
                println!(
                    "{:<16} {:<22} {:<22} {:<8} {}",
                    m["id"].as_str().unwrap_or("?"),
                    m["http"].as_str().unwrap_or("?"),
                    m["peer"].as_str().unwrap_or("?"),
                    m["status"].as_str().unwrap_or("?"),
                    m["partitions"]
                );
            }
            Ok(())
        }
        ClusterCommand::Join { seed, target } => {
            let body = serde_json::json!({ "seed": seed }).to_string();
            let url = format!("{}/cluster/join", target.url.trim_end_matches('/'));
            print_json(&exchange(
                "POST",
                &url,
                &[("content-type", "application/json")],
                Some(body.as_bytes()),
            )?)
        }
    }
}

/// `cairn plugin ...`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Upload (or replace) a plugin: every table using NAME switches to it, on every node.
    Upload {
        /// Plugin name: [a-z0-9_-]{1,64}.
        name: String,
        /// The module, built for wasm32-unknown-unknown.
        file: std::path::PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// List uploaded plugins.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Check a merge plugin's laws in the sandbox (exit 0 pass, 1 violation, 2 inconclusive).
    Check {
        /// The module.
        file: std::path::PathBuf,
        /// A JSON array of sample values (default: the plugin's sample generator).
        #[arg(long)]
        samples: Option<std::path::PathBuf>,
    },
    /// Create a plugin crate that builds to .wasm as generated.
    New {
        /// Plugin (and crate) name: [a-z0-9_-]{1,64}.
        name: String,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        /// Path to the cairn-sdk crate (default: the one this cairn was built with).
        #[arg(long)]
        sdk: Option<std::path::PathBuf>,
    },
}

/// `cairn plugin ...`.
pub fn plugin(command: &PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Upload { name, file, target } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let url = format!("{}/plugins/{name}", target.url.trim_end_matches('/'));
            print_json(&exchange(
                "PUT",
                &url,
                &[("content-type", "application/wasm")],
                Some(&bytes),
            )?)
        }
        PluginCommand::List { target } => print_json(&exchange(
            "GET",
            &format!("{}/plugins", target.url.trim_end_matches('/')),
            &[],
            None,
        )?),
        PluginCommand::Check { file, samples } => {
            let code = super::plugin::check(file, samples.as_deref())?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        PluginCommand::New { name, dir, sdk } => {
            let root = super::plugin::new(name, dir, sdk.as_deref())?;
            println!("created {}", root.display());
            println!(
                "next: cd {} && cargo build --release --target wasm32-unknown-unknown",
                root.display()
            );
            Ok(())
        }
    }
}
