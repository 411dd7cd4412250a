//! Running blocking work (iptables, fsync, file writes) from async code without holding a
//! runtime worker.

use crate::{Error, ErrorKind, Result};

/// Runs `f` on tokio's blocking pool and returns its result.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("blocking task: {e}")))?
}
