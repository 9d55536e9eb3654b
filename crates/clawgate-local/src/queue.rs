//! The per-backend queue (LOC-6): at most `maxConcurrent` requests in
//! flight to one provider, the rest wait in arrival order (tokio's
//! semaphore is fair), and a wait longer than `spillAfterMs` lets the next
//! candidate of the chain answer instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One provider's queue.
pub struct Queue {
    pub limit: u32,
    slots: Arc<Semaphore>,
    /// Requests waiting now.
    waiting: AtomicU64,
    /// Sum of queue waits, in microseconds.
    waited_us: AtomicU64,
    /// Requests that waited at all.
    queued: AtomicU64,
    /// Requests that gave up waiting and moved on (`spillAfterMs`).
    spilled: AtomicU64,
}

/// What `/metrics` and `models running` show of a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStats {
    pub provider: String,
    pub limit: u32,
    pub in_flight: u64,
    pub waiting: u64,
    pub queued_total: u64,
    pub wait_seconds_total: f64,
    pub spilled_total: u64,
}

/// Why no slot was given.
pub enum Wait {
    /// Waited `spill` and gave up.
    Spilled(Duration),
}

impl Queue {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            slots: Arc::new(Semaphore::new(limit as usize)),
            waiting: AtomicU64::new(0),
            waited_us: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
        }
    }

    /// A slot, waiting in line for it; gives up after `spill` when given.
    pub async fn slot(
        &self,
        spill: Option<Duration>,
    ) -> Result<(OwnedSemaphorePermit, Duration), Wait> {
        // Free slot: no wait, no bookkeeping.
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok((p, Duration::ZERO));
        }
        let t = Instant::now();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.queued.fetch_add(1, Ordering::Relaxed);
        let acquire = self.slots.clone().acquire_owned();
        let got = match spill {
            Some(d) => tokio::time::timeout(d, acquire).await.ok(),
            None => Some(acquire.await),
        };
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let waited = t.elapsed();
        self.waited_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        match got {
            // The semaphore is never closed.
            Some(Ok(p)) => Ok((p, waited)),
            Some(Err(_)) | None => {
                self.spilled.fetch_add(1, Ordering::Relaxed);
                Err(Wait::Spilled(waited))
            }
        }
    }

    pub fn stats(&self, provider: &str) -> QueueStats {
        QueueStats {
            provider: provider.to_string(),
            limit: self.limit,
            in_flight: u64::from(self.limit).saturating_sub(self.slots.available_permits() as u64),
            waiting: self.waiting.load(Ordering::Relaxed),
            queued_total: self.queued.load(Ordering::Relaxed),
            wait_seconds_total: self.waited_us.load(Ordering::Relaxed) as f64 / 1e6,
            spilled_total: self.spilled.load(Ordering::Relaxed),
        }
    }
}
