//! Free space on the data dir's filesystem, and the reserve below which the
//! store refuses writes: a write that does not fit is refused before it is
//! staged (507 to the client, a failed ack to a coordinator), instead of
//! failing a commit that other writes share.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::core::store::StoreError;

/// What a write may cost on disk beyond its bytes: LMDB copies the pages it
/// changes (copy-on-write), so a record may briefly take twice its size, plus
/// a page or so of branch pages.
const RECORD_OVERHEAD_FACTOR: u64 = 2;
const PAGE_OVERHEAD_BYTES: u64 = 16 * 1024;

/// The last sample, shared with the HTTP side for `/cluster`.
#[derive(Debug, Default)]
pub struct DiskGauge {
    free_bytes: AtomicU64,
    reserve_bytes: AtomicU64,
}

impl DiskGauge {
    /// Bytes free for this process on the data dir's filesystem, as last sampled.
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes.load(Ordering::Relaxed)
    }

    /// The reserve below which writes are refused.
    pub fn reserve_bytes(&self) -> u64 {
        self.reserve_bytes.load(Ordering::Relaxed)
    }

    /// Whether new writes are being refused for want of space.
    pub fn refusing(&self) -> bool {
        self.free_bytes() <= self.reserve_bytes()
    }
}

/// Samples free space and decides whether a write fits.
#[derive(Debug)]
pub struct DiskSpace {
    dir: PathBuf,
    gauge: Arc<DiskGauge>,
}

/// Bytes available to an unprivileged writer on `dir`'s filesystem.
fn available_bytes(dir: &Path) -> Result<u64, StoreError> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| {
        StoreError::Failed(format!("cannot read free space of {}: {e}", dir.display()))
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

impl DiskSpace {
    /// Starts watching `dir`, with no reserve until [`DiskSpace::set_reserve`].
    pub fn open(dir: &Path) -> Result<DiskSpace, StoreError> {
        let space = DiskSpace {
            dir: dir.to_owned(),
            gauge: Arc::new(DiskGauge::default()),
        };
        space.sample()?;
        Ok(space)
    }

    /// Writes that would leave less than `bytes` free are refused from now on.
    pub fn set_reserve(&self, bytes: u64) {
        self.gauge.reserve_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The shared view of the last sample.
    pub fn gauge(&self) -> Arc<DiskGauge> {
        self.gauge.clone()
    }

    /// Reads free space now.
    pub fn sample(&self) -> Result<(), StoreError> {
        let free = available_bytes(&self.dir)?;
        self.gauge.free_bytes.store(free, Ordering::Relaxed);
        Ok(())
    }

    /// What staging `bytes` (records and blob files) may take on disk.
    pub fn cost(record_bytes: u64, blob_bytes: u64) -> u64 {
        blob_bytes
            .saturating_add(record_bytes.saturating_mul(RECORD_OVERHEAD_FACTOR))
            .saturating_add(PAGE_OVERHEAD_BYTES)
    }

    /// Refuses a write costing `cost` bytes when, with `pending` bytes staged
    /// or being committed (not yet in the sample), it would leave less than
    /// the reserve free.
    pub fn admit(&self, pending: u64, cost: u64) -> Result<(), StoreError> {
        let (free, reserve) = (self.gauge.free_bytes(), self.gauge.reserve_bytes());
        let needed = reserve.saturating_add(pending).saturating_add(cost);
        if free < needed {
            return Err(StoreError::Full(format!(
                "{free} bytes free on the data dir's disk; this write needs about {cost} \
                 above the {reserve} reserved (and {pending} being written); reads go on"
            )));
        }
        Ok(())
    }
}
