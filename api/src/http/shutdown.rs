//! Stopping without cutting clients off: websocket sessions are counted so a stopping server
//! can wait until each has sent its close frame (1001, going away) before the process ends.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

/// The close code a stopping server sends every websocket (RFC 6455 §7.4.1: going away).
pub const GOING_AWAY: u16 = 1001;

/// Open websocket sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    open: AtomicUsize,
    idle: Notify,
}

/// One open session (see [`Sessions::open`]); it counts as closed when dropped.
pub struct Open(Arc<Sessions>);

impl Sessions {
    /// Counts a session as open until the guard is dropped.
    pub fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::SeqCst);
        Open(Arc::clone(self))
    }

    /// Sessions open now.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Waits until no session is open, or `timeout` passes; returns whether all closed.
    pub async fn closed(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.count() == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_waits_for_every_session_and_is_bounded() {
        let sessions = Arc::new(Sessions::default());
        assert!(sessions.closed(Duration::from_millis(1)).await);
        let a = sessions.open();
        let b = sessions.open();
        assert!(!sessions.closed(Duration::from_millis(20)).await);
        drop(a);
        assert!(!sessions.closed(Duration::from_millis(20)).await);
        let waiter = {
            let sessions = Arc::clone(&sessions);
            tokio::spawn(async move { sessions.closed(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(b);
        assert!(waiter.await.unwrap());
        assert_eq!(sessions.count(), 0);
    }
}
