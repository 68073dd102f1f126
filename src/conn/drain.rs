//! The drain: how a shutdown reaches every site connection and how the
//! lifecycle knows they are gone. Each connection holds a [`DrainWatch`];
//! [`Drain::shutdown`] tells them all to finish gracefully (hyper's
//! Connection: close or GOAWAY, after the responses in flight) and resolves
//! when the last watch is dropped. Ours rather than hyper-util's
//! `GracefulShutdown` because a connection also closes itself gracefully for
//! its own reasons (idle, age, request count), which needs the hyper
//! connection in hand rather than inside the drain's wrapper.

use tokio::sync::watch;

/// The lifecycle's end.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<bool>,
}

/// A connection's end: tells it when to finish, and counts it as open.
#[derive(Debug, Clone)]
pub struct DrainWatch {
    rx: watch::Receiver<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain::new()
    }
}

impl Drain {
    /// A drain nobody watches yet.
    pub fn new() -> Drain {
        Drain {
            tx: watch::channel(false).0,
        }
    }

    /// A watch for an accept loop to clone into each connection.
    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            rx: self.tx.subscribe(),
        }
    }

    /// Watches still held: connections, plus accept loops still running.
    pub fn count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Tells every watcher to finish, and resolves when none is left.
    pub async fn shutdown(self) {
        let _ = self.tx.send(true);
        self.tx.closed().await;
    }
}

impl DrainWatch {
    /// Resolves once the drain has begun (or the lifecycle is gone).
    pub async fn draining(&mut self) {
        let _ = self.rx.wait_for(|d| *d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn shutdown_waits_for_every_watch() {
        let drain = Drain::new();
        let loop_watch = drain.watch();
        let mut conn = loop_watch.clone();
        drop(loop_watch);
        assert_eq!(drain.count(), 1);
        let task = tokio::spawn(async move {
            conn.draining().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(conn);
        });
        tokio::time::timeout(Duration::from_secs(2), drain.shutdown())
            .await
            .expect("drained once the connection let go");
        task.await.unwrap();
    }
}
