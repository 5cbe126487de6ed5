//! The blob engine's files: one fsynced file per distinct value, named by the
//! sha256 of its bytes, so equal values share a file and a file never changes.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::core::store::StoreError;

/// A value's name in the blob directory.
pub type BlobId = [u8; 32];

/// The sha256 of `bytes`.
pub fn blob_id(bytes: &[u8]) -> BlobId {
    Sha256::digest(bytes).into()
}

fn hex(id: &BlobId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(name: &str) -> Option<BlobId> {
    if name.len() != 64 {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(name.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(id)
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Failed(format!("{what} {}: {e}", path.display()))
}

/// The directory of blob files.
#[derive(Debug, Clone)]
pub struct BlobDir {
    dir: PathBuf,
}

impl BlobDir {
    /// Opens (or creates) `dir`.
    pub fn open(dir: PathBuf) -> Result<BlobDir, StoreError> {
        std::fs::create_dir_all(&dir).map_err(|e| io_error("creating", &dir, e))?;
        Ok(BlobDir { dir })
    }

    fn path(&self, id: &BlobId) -> PathBuf {
        self.dir.join(hex(id))
    }

    /// Writes a blob durably (temporary file, fsync, rename); an existing blob
    /// is already durable and left alone. Call [`BlobDir::sync`] after a batch.
    pub fn write(&self, id: &BlobId, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path(id);
        if path.exists() {
            return Ok(());
        }
        let temporary = self.dir.join(format!(".{}.tmp", hex(id)));
        let written = Self::write_file(&temporary, bytes)
            .and_then(|()| std::fs::rename(&temporary, &path).map_err(|e| ("renaming", e)));
        written.map_err(|(what, e)| {
            // A half-written file (a full disk, no descriptor left) is of no
            // use to anyone and would hold the space that ran out.
            let _ = std::fs::remove_file(&temporary);
            io_error(what, &temporary, e)
        })
    }

    fn write_file(path: &Path, bytes: &[u8]) -> Result<(), (&'static str, std::io::Error)> {
        let mut file = std::fs::File::create(path).map_err(|e| ("creating", e))?;
        file.write_all(bytes).map_err(|e| ("writing", e))?;
        file.sync_all().map_err(|e| ("syncing", e))
    }

    /// Makes the batch's renames durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        let dir = std::fs::File::open(&self.dir).map_err(|e| io_error("opening", &self.dir, e))?;
        dir.sync_all()
            .map_err(|e| io_error("syncing", &self.dir, e))
    }

    /// Reads a blob and checks it still hashes to its name.
    pub fn read(&self, id: &BlobId) -> Result<Bytes, StoreError> {
        let path = self.path(id);
        let bytes = std::fs::read(&path).map_err(|e| io_error("reading", &path, e))?;
        if blob_id(&bytes) != *id {
            return Err(StoreError::Failed(format!(
                "blob {} is corrupt",
                path.display()
            )));
        }
        Ok(Bytes::from(bytes))
    }

    /// Deletes every blob not in `referenced`, and the temporary files of
    /// blobs not in it (left by a crash); a referenced blob's temporary file
    /// is being written by the committing thread and stays. Returns how many
    /// files went.
    pub fn collect(&self, referenced: &HashSet<BlobId>) -> Result<usize, StoreError> {
        let mut removed = 0;
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| io_error("listing", &self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let blob = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".tmp"))
                .unwrap_or(&name);
            let keep = parse_hex(blob).is_some_and(|id| referenced.contains(&id));
            if !keep && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}
