//! Client commands: thin wrappers over the HTTP API that print what a node answers.

use std::io::Write;

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
    /// What each member holds of a table: keys, tombstones, live bytes,
    /// and keys by sibling count.
    Stats {
        /// Table.
        name: String,
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

/// One HTTP exchange's outcome.
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Selected headers.
    pub context: Option<String>,
    /// Content-Type.
    pub content_type: Option<String>,
    /// `x-cairn-next` (an export page's cursor).
    pub next: Option<String>,
    /// Body.
    pub body: Vec<u8>,
}

/// The CA certificate `--ca-cert` (or `CAIRN_CA_CERT`) names, set once
/// before any command runs.
static CA_CERT: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();

/// Sets the CA certificate https:// URLs are checked against (`None`: the
/// public roots).
pub fn set_ca_cert(path: Option<std::path::PathBuf>) {
    let _ = CA_CERT.set(path);
}

/// The certificates of `--ca-cert`, when one was given.
pub fn ca_certs() -> anyhow::Result<Option<Vec<rustls_pki_types::CertificateDer<'static>>>> {
    use rustls_pki_types::pem::PemObject;
    let Some(path) = CA_CERT.get().and_then(Option::as_ref) else {
        return Ok(None);
    };
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("--ca-cert {}: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("--ca-cert {}: no CERTIFICATE in it", path.display());
    }
    Ok(Some(certs))
}

fn agent() -> anyhow::Result<ureq::Agent> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0);
    if let Some(certs) = ca_certs()? {
        let roots: Vec<ureq::tls::Certificate<'static>> = certs
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                .build(),
        );
    }
    Ok(config.build().into())
}

/// The API key client commands send (`Authorization: Bearer`), from
/// `CAIRN_API_KEY` or the file `CAIRN_API_KEY_FILE` names; read once. Not a
/// flag, so it never shows in the process list.
pub fn api_key() -> anyhow::Result<Option<&'static str>> {
    static KEY: std::sync::OnceLock<Result<Option<String>, String>> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        if let Ok(key) = std::env::var("CAIRN_API_KEY") {
            return Ok(Some(key.trim().to_owned()));
        }
        match std::env::var_os("CAIRN_API_KEY_FILE") {
            Some(path) => std::fs::read_to_string(&path)
                .map(|k| Some(k.trim().to_owned()))
                .map_err(|e| format!("CAIRN_API_KEY_FILE {}: {e}", path.to_string_lossy())),
            None => Ok(None),
        }
    });
    match key {
        Ok(key) => Ok(key.as_deref().filter(|k| !k.is_empty())),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

/// Sends one request and reads the whole answer.
pub fn exchange(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<Answer> {
    let agent = agent()?;
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if let Some(key) = api_key()? {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    let request = builder.body(body.map(<[u8]>::to_vec).unwrap_or_default())?;
    let response = agent
        .run(request)
        .map_err(|e| explain_send_error(e, method, url))?;
    answer_of(response)
}

/// Reads a whole answer.
fn answer_of(mut response: ureq::http::Response<ureq::Body>) -> anyhow::Result<Answer> {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let context = header("x-cairn-context");
    let content_type = header("content-type");
    let next = header("x-cairn-next");
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
        next,
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

/// The server's reason from an error answer: its JSON `error`, or the body
/// as text when it is not a Cairn answer.
fn reason(answer: &Answer) -> String {
    serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).trim().to_owned())
}

pub(super) fn fail_unless_ok(answer: &Answer) -> anyhow::Result<()> {
    if answer.status >= 400 {
        anyhow::bail!("HTTP {}: {}", answer.status, reason(answer));
    }
    Ok(())
}

/// Says what a broken connection during an upload most likely means: the
/// node refused the body (too large) and closed, and its answer was lost.
fn explain_send_error(e: ureq::Error, method: &str, url: &str) -> anyhow::Error {
    let broken = matches!(&e, ureq::Error::Io(io) if matches!(
        io.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
    ));
    if broken {
        anyhow::anyhow!(
            "{method} {url}: the node closed the connection while the value was sent \
             (a value larger than the node's --value-bytes-max is refused with 413)"
        )
    } else {
        anyhow::Error::new(e).context(format!("{method} {url}"))
    }
}

/// stdin's length when it is a regular file (`< file`), so the value can be
/// announced: a node then refuses one over its limit before a byte is sent.
fn stdin_file_len() -> Option<u64> {
    use std::io::Seek as _;
    use std::os::fd::AsFd as _;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let mut file = std::fs::File::from(fd);
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let at = file.stream_position().ok()?;
    Some(meta.len().saturating_sub(at))
}

/// `cairn put`. A value from stdin is streamed, not read into memory; every
/// PUT asks `Expect: 100-continue`, so a refusal arrives before the body.
pub fn put(args: &PutArgs) -> anyhow::Result<()> {
    let mut headers = vec![
        ("content-type", args.content_type.as_str()),
        ("expect", "100-continue"),
    ];
    if let Some(context) = &args.context {
        headers.push(("x-cairn-context", context));
    }
    let url = key_url(
        &args.target,
        &args.table,
        &args.key,
        &quorum_query("w", args.w),
    );
    let answer = match args.value.as_deref() {
        Some(value) if value != "-" => exchange("PUT", &url, &headers, Some(value.as_bytes()))?,
        _ => {
            let length = stdin_file_len().map(|n| n.to_string());
            if let Some(length) = &length {
                headers.push(("content-length", length));
            }
            let mut request = agent()?.put(&url);
            for (name, value) in &headers {
                request = request.header(*name, *value);
            }
            if let Some(key) = api_key()? {
                request = request.header("authorization", format!("Bearer {key}"));
            }
            let stdin = std::io::stdin();
            let mut reader = stdin.lock();
            let response = request
                .send(ureq::SendBody::from_reader(&mut reader))
                .map_err(|e| explain_send_error(e, "PUT", &url))?;
            answer_of(response)?
        }
    };
    fail_unless_ok(&answer)?;
    println!("stored; context: {}", answer.context.unwrap_or_default());
    Ok(())
}

/// `cairn get`. One value goes to stdout byte for byte (its content type and
/// context to stderr); siblings are listed; any error shows the node's reason.
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
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&answer.body)?;
            stdout.flush()?;
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
        _ => {
            fail_unless_ok(&answer)?;
            anyhow::bail!("unexpected HTTP {}: {}", answer.status, reason(&answer))
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

pub(super) fn print_json(answer: &Answer) -> anyhow::Result<()> {
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
        TableCommand::Stats { name, target } => super::backup::stats(name, target),
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
