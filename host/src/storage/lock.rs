//! One process per data dir. Two `cairn serve` processes on one dir would
//! share its epoch and its clean-shutdown mark and announce two addresses for
//! one node id; an advisory lock on `LOCK`, held for the life of the process
//! and released by the kernel however it ends (kill -9 included), refuses the
//! second at start and names the holder.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::core::store::StoreError;

/// Name of the lock file inside a data dir.
const LOCK_FILE: &str = "LOCK";

/// Holds a data dir's lock while it lives.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `dir`, or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, StoreError> {
        let path = dir.join(LOCK_FILE);
        let failed =
            |e: std::io::Error| StoreError::Failed(format!("cannot lock {}: {e}", path.display()));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(failed)?;
                file.seek(SeekFrom::Start(0)).map_err(failed)?;
                writeln!(file, "{}", std::process::id()).map_err(failed)?;
                Ok(DataDirLock { _file: file })
            }
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_owned()
                } else {
                    format!("process {holder}")
                };
                Err(StoreError::Failed(format!(
                    "data dir {} is in use by {holder}: one data dir serves one running node",
                    dir.display()
                )))
            }
            Err(TryLockError::Error(e)) => Err(failed(e)),
        }
    }
}
