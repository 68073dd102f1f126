//! The certificate watch: certificate and key files are checked for changes
//! every `tls.watch_interval` (read from the current configuration each
//! round, so a reload can change it), and changed ones are loaded behind the
//! resolver without a reload. A bad new file keeps the old certificate.
//! The same round reads again each `basic_auth` file that changed.

use std::sync::Arc;
use std::time::Duration;

use crate::state::State;

/// Runs until aborted.
pub async fn watch(state: Arc<State>) {
    let mut last_error = Vec::new();
    loop {
        let interval = state.config().tls.watch_interval;
        if interval.is_zero() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tokio::time::sleep(interval).await;
        let resolver = Arc::clone(&state.tls_resolver);
        last_error = tokio::task::spawn_blocking(move || {
            resolver.refresh_if_changed(&mut last_error);
            last_error
        })
        .await
        .unwrap_or_default();
        state.metrics.set_certificates(&state.tls_resolver.store());
        // `basic_auth` files too: a password changed or a user removed
        // applies without a reload.
        let sites = state.sites();
        let _ = tokio::task::spawn_blocking(move || sites.refresh_users()).await;
    }
}
