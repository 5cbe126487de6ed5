//! `cairn backup`, `cairn restore` and `cairn table stats`: a table's
//! objects streamed page by page from every member into a file, merged back
//! into a cluster from it, and summed per member.
//!
//! Both directions resume: a backup continues each member's walk from the
//! last cursor in the file, a restore skips the objects a progress file
//! beside the backup says it already restored. See
//! [`crate::core::backup`] for the format.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use serde_json::Value;

use super::client::{exchange, fail_unless_ok, Answer, Target};
use crate::core::backup::{
    decode_frame, decode_frames, encode_frame, frame_len, hex, BackupFrame, LENGTH_BYTES, MAGIC,
    SIBLINGS_LABELS,
};

/// `cairn backup TABLE FILE`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The table.
    pub table: String,
    /// The backup file: created, or continued if it holds an unfinished
    /// backup of the same table.
    pub file: PathBuf,
    /// Keys per page asked of a member.
    #[arg(long, default_value_t = 500)]
    pub page_keys: usize,
    /// Stop after this many pages (to try resuming).
    #[arg(long, hide = true)]
    pub pages_max: Option<usize>,
    #[command(flatten)]
    pub target: Target,
}

/// `cairn restore TABLE FILE`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The table to restore into (created with the backup's configuration
    /// if the cluster has none by that name).
    pub table: String,
    /// The backup file.
    pub file: PathBuf,
    /// Replicas that must store each object durably before it counts.
    #[arg(long)]
    pub w: Option<u8>,
    /// Objects sent per import request at most.
    #[arg(long, default_value_t = 500)]
    pub batch_objects: usize,
    /// Stop after this many batches (to try resuming).
    #[arg(long, hide = true)]
    pub batches_max: Option<usize>,
    #[command(flatten)]
    pub target: Target,
}

/// Bytes per import batch at most (a single larger object goes alone).
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Tries of one page or batch before giving up (the run can be resumed).
const TRIES: u32 = 5;

fn base(target: &Target) -> &str {
    target.url.trim_end_matches('/')
}

/// Every member's id and base URL, as the node at `target` sees them
/// (same scheme as `target`).
fn members(target: &Target) -> anyhow::Result<Vec<(String, String)>> {
    let answer = exchange("GET", &format!("{}/cluster", base(target)), &[], None)?;
    fail_unless_ok(&answer)?;
    let status: Value = serde_json::from_slice(&answer.body)?;
    let scheme = if target.url.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    let mut members: Vec<(String, String)> = status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some((
                m["id"].as_str()?.to_owned(),
                format!("{scheme}://{}", m["http"].as_str()?),
            ))
        })
        .collect();
    members.sort();
    Ok(members)
}

/// One exchange, tried again on a network error or a 503 (with a growing
/// pause), up to [`TRIES`] times.
fn with_retries(
    what: &str,
    mut attempt: impl FnMut() -> anyhow::Result<Answer>,
) -> anyhow::Result<Answer> {
    let mut pause = Duration::from_millis(200);
    let mut tries = 0;
    loop {
        tries += 1;
        let outcome = attempt();
        let retry = match &outcome {
            Ok(answer) => answer.status == 503,
            Err(_) => true,
        };
        if !retry || tries >= TRIES {
            return outcome.with_context(|| format!("{what} (tried {tries} times)"));
        }
        std::thread::sleep(pause);
        pause *= 2;
    }
}

/// An export cursor from its hex form.
fn unhex(text: &str) -> anyhow::Result<Bytes> {
    crate::core::backup::unhex(text)
        .map(Bytes::from)
        .ok_or_else(|| anyhow::anyhow!("the cursor {text:?} a node sent is not hex"))
}

/// Reads frames from a backup file after its magic; stops cleanly at a
/// partial frame at the end (a writer that stopped mid-frame).
struct FrameFile {
    reader: BufReader<File>,
    /// Bytes of the file read as whole frames (with the magic).
    consumed: u64,
}

impl FrameFile {
    fn open(path: &Path) -> anyhow::Result<FrameFile> {
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 8];
        reader
            .read_exact(&mut magic)
            .with_context(|| format!("{} is not a Cairn backup (too short)", path.display()))?;
        anyhow::ensure!(
            &magic == MAGIC,
            "{} is not a Cairn backup (no CAIRNBK1 header)",
            path.display()
        );
        Ok(FrameFile {
            reader,
            consumed: MAGIC.len() as u64,
        })
    }

    /// The next whole frame, or `None` at the end (or at a partial frame).
    fn next_frame(&mut self) -> anyhow::Result<Option<BackupFrame>> {
        let mut prefix = [0u8; LENGTH_BYTES];
        if !read_all_or_eof(&mut self.reader, &mut prefix)? {
            return Ok(None);
        }
        let len = frame_len(prefix).context("a frame in the backup")?;
        let mut body = vec![0u8; len];
        if !read_all_or_eof(&mut self.reader, &mut body)? {
            return Ok(None);
        }
        let frame = decode_frame(&body).context("a frame in the backup")?;
        self.consumed += (LENGTH_BYTES + len) as u64;
        Ok(Some(frame))
    }
}

/// Fills `buf`; `false` if the reader ended first.
fn read_all_or_eof(reader: &mut impl Read, buf: &mut [u8]) -> anyhow::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => return Ok(false),
            n => filled += n,
        }
    }
    Ok(true)
}

/// Where each member's walk stands in an existing backup file, and how
/// many bytes of it are whole frames.
struct Resumed {
    cursors: HashMap<String, (Option<Bytes>, bool)>,
    /// Whether the file ends with the backup's end mark.
    complete: bool,
    objects: u64,
    whole_bytes: u64,
}

fn resume_point(path: &Path, table: &str) -> anyhow::Result<Resumed> {
    let (held, resumed) = scan(path)?;
    anyhow::ensure!(
        held == table,
        "{} is a backup of table {held}, not {table}",
        path.display()
    );
    Ok(resumed)
}

/// [`resume_point`] whatever table the backup holds (a restore may name
/// another).
fn resume_point_any_table(path: &Path) -> anyhow::Result<Resumed> {
    scan(path).map(|(_, resumed)| resumed)
}

/// The table a backup file holds and where each member's walk stands.
fn scan(path: &Path) -> anyhow::Result<(String, Resumed)> {
    let mut file = FrameFile::open(path)?;
    let held = match file.next_frame()? {
        Some(BackupFrame::Header { table, .. }) => table,
        _ => anyhow::bail!("{} has no backup header", path.display()),
    };
    let mut resumed = Resumed {
        cursors: HashMap::new(),
        complete: false,
        objects: 0,
        whole_bytes: 0,
    };
    while let Some(frame) = file.next_frame()? {
        match frame {
            BackupFrame::Object { .. } => resumed.objects += 1,
            BackupFrame::Cursor { node, after, done } => {
                resumed.cursors.insert(node, (after, done));
            }
            BackupFrame::Header { .. } => anyhow::bail!("a second header in the backup"),
            BackupFrame::End { .. } => resumed.complete = true,
        }
    }
    resumed.whole_bytes = file.consumed;
    Ok((held, resumed))
}

/// `cairn backup`.
pub fn backup(args: &BackupArgs) -> anyhow::Result<()> {
    let table_url = format!("{}/tables/{}", base(&args.target), args.table);
    let config = exchange("GET", &table_url, &[], None)?;
    fail_unless_ok(&config)?;
    let members = members(&args.target)?;
    let exists = args.file.metadata().is_ok_and(|m| m.len() > 0);
    let (mut file, mut cursors, mut objects) = if exists {
        let resumed = resume_point(&args.file, &args.table)?;
        anyhow::ensure!(
            !resumed.complete,
            "{} already holds a complete backup of {} ({} objects); remove it or choose another file",
            args.file.display(),
            args.table,
            resumed.objects
        );
        let mut file = OpenOptions::new().write(true).open(&args.file)?;
        // A frame cut short by a stop is dropped and written again.
        file.set_len(resumed.whole_bytes)?;
        file.seek(SeekFrom::End(0))?;
        eprintln!(
            "resuming {}: {} objects already in it",
            args.file.display(),
            resumed.objects
        );
        (file, resumed.cursors, resumed.objects)
    } else {
        let mut file =
            File::create(&args.file).with_context(|| format!("create {}", args.file.display()))?;
        let mut head = MAGIC.to_vec();
        let created_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        encode_frame(
            &BackupFrame::Header {
                table: args.table.clone(),
                config_json: String::from_utf8_lossy(&config.body).into_owned(),
                created_ms,
            },
            &mut head,
        )?;
        file.write_all(&head)?;
        (file, HashMap::new(), 0)
    };
    let mut pages = 0;
    for (id, url) in &members {
        let (mut after, done) = cursors.remove(id).unwrap_or((None, false));
        if done {
            continue;
        }
        loop {
            let cursor = after.as_ref().map(|a| format!("&after={}", hex(a)));
            let page_url = format!(
                "{url}/tables/{}/export?limit={}{}",
                args.table,
                args.page_keys,
                cursor.unwrap_or_default()
            );
            let answer = with_retries(&format!("export from {id} ({url})"), || {
                exchange("GET", &page_url, &[], None)
            })?;
            fail_unless_ok(&answer).with_context(|| format!("export from {id}"))?;
            let (frames, used) =
                decode_frames(&answer.body).with_context(|| format!("a page from {id}"))?;
            anyhow::ensure!(used == answer.body.len(), "a page from {id} ends mid-frame");
            let last = frames.iter().rev().find_map(|f| match f {
                BackupFrame::Object { key, .. } => Some(key.clone()),
                _ => None,
            });
            objects += frames.len() as u64;
            let next = answer.next.as_deref().map(unhex).transpose()?;
            let mut out = answer.body;
            let done = next.is_none();
            after = next.or(last).or(after);
            encode_frame(
                &BackupFrame::Cursor {
                    node: id.clone(),
                    after: after.clone(),
                    done,
                },
                &mut out,
            )?;
            file.write_all(&out)?;
            pages += 1;
            if done {
                break;
            }
            if args.pages_max.is_some_and(|max| pages >= max) {
                file.sync_all()?;
                anyhow::bail!(
                    "stopped after {pages} pages (--pages-max); run the same command again to resume"
                );
            }
        }
    }
    let mut end = Vec::new();
    encode_frame(
        &BackupFrame::End {
            members: members.iter().map(|(id, _)| id.clone()).collect(),
        },
        &mut end,
    )?;
    file.write_all(&end)?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    println!(
        "backup of {}: {objects} objects from {} members ({} bytes) in {}",
        args.table,
        members.len(),
        size,
        args.file.display()
    );
    Ok(())
}

/// The progress file of a restore from `file`.
fn progress_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".restored");
    PathBuf::from(name)
}

/// The progress a restore recorded: objects restored from this file into
/// this table at this URL (a progress file for another target is ignored).
fn restored_before(progress: &Path, target: &str, table: &str) -> anyhow::Result<u64> {
    let Ok(text) = std::fs::read_to_string(progress) else {
        return Ok(0);
    };
    let mut fields = text.split_whitespace();
    match (fields.next(), fields.next(), fields.next()) {
        (Some(url), Some(name), Some(count)) if url == target && name == table => count
            .parse()
            .with_context(|| format!("{} is not a restore's progress", progress.display())),
        _ => Ok(0),
    }
}

/// `cairn restore`.
pub fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    // Every member's walk must be complete: an unfinished backup restores
    // only part of the table.
    let resumed = resume_point_any_table(&args.file)?;
    anyhow::ensure!(
        resumed.complete,
        "{} is an unfinished backup (some member's walk did not complete); finish it with `cairn backup` first",
        args.file.display()
    );
    let mut file = FrameFile::open(&args.file)?;
    let config_json = match file.next_frame()? {
        Some(BackupFrame::Header { config_json, .. }) => config_json,
        _ => anyhow::bail!("{} has no backup header", args.file.display()),
    };
    ensure_table(&args.target, &args.table, &config_json)?;
    let progress = progress_path(&args.file);
    let target_url = base(&args.target).to_owned();
    let skip = restored_before(&progress, &target_url, &args.table)?;
    if skip > 0 {
        eprintln!("resuming: {skip} objects restored before");
    }
    let import_url = format!(
        "{}/tables/{}/import{}",
        base(&args.target),
        args.table,
        args.w.map(|w| format!("?w={w}")).unwrap_or_default()
    );
    let (mut seen, mut restored, mut batches) = (0u64, skip, 0usize);
    let mut batch = Vec::new();
    let mut in_batch = 0u64;
    loop {
        let frame = file.next_frame()?;
        if let Some(BackupFrame::Object { key, object }) = frame.clone() {
            seen += 1;
            if seen <= skip {
                continue;
            }
            encode_frame(&BackupFrame::Object { key, object }, &mut batch)?;
            in_batch += 1;
        }
        let full = in_batch as usize >= args.batch_objects.max(1) || batch.len() >= BATCH_BYTES;
        if in_batch > 0 && (full || frame.is_none()) {
            let answer = with_retries("import", || {
                exchange(
                    "POST",
                    &import_url,
                    &[("content-type", "application/x-cairn-backup")],
                    Some(&batch),
                )
            })?;
            fail_unless_ok(&answer).with_context(|| {
                format!("restored {restored} objects so far; run the same command again to resume")
            })?;
            restored += in_batch;
            std::fs::write(
                &progress,
                format!("{target_url} {} {restored}\n", args.table),
            )
            .with_context(|| format!("write {}", progress.display()))?;
            batch.clear();
            in_batch = 0;
            batches += 1;
            if args.batches_max.is_some_and(|max| batches >= max) && frame.is_some() {
                anyhow::bail!(
                    "stopped after {batches} batches (--batches-max); run the same command again to resume"
                );
            }
        }
        if frame.is_none() {
            break;
        }
    }
    let _ = std::fs::remove_file(&progress);
    println!(
        "restored {restored} objects into {} from {}",
        args.table,
        args.file.display()
    );
    Ok(())
}

/// Creates `table` with the backup's configuration if the cluster has no
/// table by that name.
fn ensure_table(target: &Target, table: &str, config_json: &str) -> anyhow::Result<()> {
    let url = format!("{}/tables/{table}", base(target));
    let found = exchange("GET", &url, &[], None)?;
    if found.status == 200 {
        return Ok(());
    }
    let mut config: Value =
        serde_json::from_str(config_json).context("the backup's table configuration")?;
    if let Value::Object(map) = &mut config {
        map.remove("name");
    }
    let body = config.to_string();
    let created = exchange(
        "PUT",
        &url,
        &[("content-type", "application/json")],
        Some(body.as_bytes()),
    )?;
    fail_unless_ok(&created).with_context(|| {
        format!("creating table {table} with the backup's configuration {config_json}")
    })?;
    eprintln!("created table {table}: {config_json}");
    Ok(())
}

/// `cairn table stats T`: what each member holds of the table.
pub fn stats(table: &str, target: &Target) -> anyhow::Result<()> {
    println!(
        "{:<16} {:>10} {:>10} {:>14}   siblings: {}",
        "NODE",
        "KEYS",
        "TOMBSTONES",
        "LIVE BYTES",
        SIBLINGS_LABELS.join(" / ")
    );
    for (id, url) in members(target)? {
        let answer = exchange("GET", &format!("{url}/tables/{table}/stats"), &[], None);
        let stats = match answer {
            Ok(answer) if answer.status == 200 => serde_json::from_slice::<Value>(&answer.body)?,
            Ok(answer) => {
                fail_unless_ok(&answer)?;
                continue;
            }
            Err(e) => {
                println!("{id:<16} not answering: {e:#}");
                continue;
            }
        };
        let siblings: Vec<String> = SIBLINGS_LABELS
            .iter()
            .map(|label| stats["siblings"][*label].as_u64().unwrap_or(0).to_string())
            .collect();
        println!(
            "{id:<16} {:>10} {:>10} {:>14}   {}",
            stats["keys"].as_u64().unwrap_or(0),
            stats["tombstones"].as_u64().unwrap_or(0),
            stats["live_bytes"].as_u64().unwrap_or(0),
            siblings.join(" / ")
        );
    }
    Ok(())
}
