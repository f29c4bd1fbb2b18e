//! Backups: streamed, checksummed, atomic sets; verify, restore, list, prune.
//! `engines` holds the per-kind dump and restore commands (pg_dump,
//! mongodump, volume tar).
// The file is named for the tool, as every tool file is.
#[allow(clippy::module_inception)]
pub mod backup;
pub mod engines;
pub mod list_backups;
pub mod prune_backups;
pub mod restore;
pub mod verify_backup;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::adapters::backup_store::FileSink;
use crate::engine::ChunkSink;

/// A backup file takes a process's stdout straight from the engine.
impl ChunkSink for FileSink {
    fn send(&self, chunk: Bytes) -> BoxFuture<'_, bool> {
        Box::pin(FileSink::send(self, chunk))
    }
}
