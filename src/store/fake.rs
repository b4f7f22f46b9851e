//! An in-process stand-in for the Redis slot with the same lease, fence and announcement rules, on
//! tokio's clock, so the renewal protocol is unit-tested on paused time. Several token managers
//! sharing one `FakeShared` behave like replicas sharing one Redis key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Commit, StoreDown, StoredToken, Versioned};

#[derive(Debug, Clone)]
pub struct FakeShared {
    state: Arc<Mutex<State>>,
    renewed: watch::Sender<u64>,
    reconnected: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    up: bool,
    token: Option<Versioned>,
    lease: Option<(String, Instant)>,
    commits: u64,
    rejected_commits: u64,
}

impl Default for FakeShared {
    fn default() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                up: true,
                ..State::default()
            })),
            renewed: watch::Sender::new(0),
            reconnected: watch::Sender::new(0),
        }
    }
}

impl FakeShared {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, StoreDown> {
        let mut state = self.state.lock().expect("test lock");
        if !state.up {
            return Err(StoreDown);
        }
        if state.lease.as_ref().is_some_and(|(_, until)| *until <= Instant::now()) {
            state.lease = None;
        }
        Ok(f(&mut state))
    }

    pub async fn read(&self) -> Result<Option<Versioned>, StoreDown> {
        self.with(|s| s.token.clone())
    }

    pub async fn try_lease(&self, owner: &str, ttl: Duration) -> Result<bool, StoreDown> {
        self.with(|s| {
            let free = s.lease.is_none();
            if free {
                s.lease = Some((owner.to_owned(), Instant::now() + ttl));
            }
            free
        })
    }

    pub async fn extend_lease(&self, owner: &str, ttl: Duration) -> Result<bool, StoreDown> {
        self.with(|s| match &mut s.lease {
            Some((holder, until)) if holder == owner => {
                *until = Instant::now() + ttl;
                true
            }
            _ => false,
        })
    }

    pub async fn release_lease(&self, owner: &str) -> Result<(), StoreDown> {
        self.with(|s| {
            if s.lease.as_ref().is_some_and(|(holder, _)| holder == owner) {
                s.lease = None;
            }
        })
    }

    pub async fn commit(
        &self,
        owner: &str,
        read_version: u64,
        version: u64,
        token: &StoredToken,
    ) -> Result<Commit, StoreDown> {
        let outcome = self.with(|s| {
            let current = s.token.as_ref().map_or(0, |t| t.version);
            let outcome = if s.lease.as_ref().is_none_or(|(holder, _)| holder != owner) {
                Commit::LeaseLost
            } else if current != read_version || version <= current {
                Commit::Superseded
            } else {
                s.token = Some(Versioned {
                    version,
                    token: token.clone(),
                });
                s.commits += 1;
                Commit::Committed(version)
            };
            if outcome != Commit::Committed(version) {
                s.rejected_commits += 1;
            }
            outcome
        })?;
        if let Commit::Committed(version) = outcome {
            self.renewed.send_replace(version);
        }
        Ok(outcome)
    }

    pub fn renewed(&self) -> watch::Receiver<u64> {
        self.renewed.subscribe()
    }

    pub fn reconnected(&self) -> watch::Receiver<u64> {
        self.reconnected.subscribe()
    }

    pub fn is_up(&self) -> bool {
        self.state.lock().expect("test lock").up
    }

    /// Takes the store down or brings it back (announcing the return, as the health task does).
    pub fn set_up(&self, up: bool) {
        let was = std::mem::replace(&mut self.state.lock().expect("test lock").up, up);
        if up && !was {
            self.reconnected.send_modify(|n| *n += 1);
        }
    }

    /// Drops the lease as its TTL would, whoever holds it.
    pub fn expire_lease(&self) {
        self.state.lock().expect("test lock").lease = None;
    }

    /// Forgets everything, as a Redis restarted empty does.
    pub fn wipe(&self) {
        let mut state = self.state.lock().expect("test lock");
        state.token = None;
        state.lease = None;
    }

    pub fn stored(&self) -> Option<Versioned> {
        self.state.lock().expect("test lock").token.clone()
    }

    /// Accepted and rejected commits so far.
    pub fn commits(&self) -> (u64, u64) {
        let state = self.state.lock().expect("test lock");
        (state.commits, state.rejected_commits)
    }
}
