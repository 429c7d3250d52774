//! A circuit breaker per OTP instance: failsafe's state machine, wrapped where it falls
//! short.
//!
//! failsafe gives the closed → open → half-open → closed machine with a consecutive-failures
//! policy. What we add around it:
//! - we drive it by hand (`is_call_permitted`, `on_success`, `on_error`) so that an answer
//!   that is neither success nor failure (a 404) leaves the failure streak alone: failsafe's
//!   own `call_with` would record it as a success;
//! - half-open admits at most [`MAX_PROBES`] calls at a time (failsafe lets every
//!   concurrent call through);
//! - the open period is our own backoff iterator: `breaker_open` at first, doubling with up
//!   to 20 % jitter, capped ([`open_cap`]); failsafe's helpers panic under one second;
//! - the state and counters are kept in atomics through its `Instrument` hooks, so
//!   `/memory-stats`, `/metrics` and `GET /instances` can read them.
//!
//! A rejection touches no socket: one mutex and one clock read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use failsafe::failure_policy::{ConsecutiveFailures, consecutive_failures};
use failsafe::{Config as FailsafeConfig, Instrument, StateMachine};
use rand::Rng;

/// Calls let through at once while half-open.
pub const MAX_PROBES: u32 = 1;

/// Longest open period: ten times the first, at least five minutes.
pub fn open_cap(first: Duration) -> Duration {
    (first * 10).max(Duration::from_secs(300))
}

/// The open periods: `first`, then doubling with up to 20 % jitter, capped.
#[derive(Clone, Debug)]
pub struct OpenBackoff {
    next: Duration,
    cap: Duration,
}

impl OpenBackoff {
    pub fn new(first: Duration) -> Self {
        Self {
            next: first,
            cap: open_cap(first),
        }
    }
}

impl Iterator for OpenBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (base * 2).min(self.cap);
        let jitter = rand::rng().random_range(0.0..0.2);
        Some(base.mul_f64(1.0 + jitter).min(self.cap))
    }
}

/// What the breaker is doing, as shown to operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }
    /// 0 closed, 1 open, 2 half-open: the value of the Prometheus gauge.
    pub fn as_gauge(self) -> i64 {
        self as i64
    }
}

/// Counters and the current state, written by failsafe's hooks.
#[derive(Debug, Default)]
pub struct BreakerStats {
    state: AtomicU8,
    pub opened: AtomicU64,
    pub rejected: AtomicU64,
    pub half_opened: AtomicU64,
    pub closed: AtomicU64,
}

#[derive(Clone, Debug)]
struct Hooks(Arc<BreakerStats>);

impl Instrument for Hooks {
    fn on_call_rejected(&self) {
        self.0.rejected.fetch_add(1, Ordering::Relaxed);
    }
    fn on_open(&self) {
        self.0.state.store(1, Ordering::SeqCst);
        self.0.opened.fetch_add(1, Ordering::Relaxed);
    }
    fn on_half_open(&self) {
        self.0.state.store(2, Ordering::SeqCst);
        self.0.half_opened.fetch_add(1, Ordering::Relaxed);
    }
    fn on_closed(&self) {
        self.0.state.store(0, Ordering::SeqCst);
        self.0.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// How a guarded call ended, for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// Neither: a 4xx answer, or a call abandoned by its caller. The streak stays as it is.
    Neutral,
}

/// The per-instance breaker.
pub struct Breaker {
    machine: StateMachine<ConsecutiveFailures<OpenBackoff>, Hooks>,
    stats: Arc<BreakerStats>,
    probes: Arc<AtomicU32>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("state", &self.state())
            .finish()
    }
}

/// Permission for one call. Report its end with [`Breaker::record`]; dropping it unrecorded
/// counts as [`Outcome::Neutral`] (it frees a half-open probe slot).
#[derive(Debug)]
pub struct Permit {
    probe: Option<Arc<AtomicU32>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(probes) = self.probe.take() {
            probes.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The breaker refused the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected;

impl Breaker {
    /// Opens after `failures` consecutive failures, for `first_open` at first.
    pub fn new(failures: u32, first_open: Duration) -> Self {
        let stats = Arc::new(BreakerStats::default());
        let machine = FailsafeConfig::new()
            .failure_policy(consecutive_failures(failures, OpenBackoff::new(first_open)))
            .instrument(Hooks(stats.clone()))
            .build();
        // Building reports "closed" once; that is not a transition worth counting.
        stats.closed.store(0, Ordering::Relaxed);
        Self {
            machine,
            stats,
            probes: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Asks to make a call. Closed: yes. Open: no, until the open period is over; then
    /// half-open, where at most [`MAX_PROBES`] calls are let through at a time.
    pub fn try_acquire(&self) -> Result<Permit, Rejected> {
        if !self.machine.is_call_permitted() {
            return Err(Rejected);
        }
        if self.state() != BreakerState::HalfOpen {
            return Ok(Permit { probe: None });
        }
        let admitted = self
            .probes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_PROBES).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Ok(Permit {
                probe: Some(self.probes.clone()),
            })
        } else {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            Err(Rejected)
        }
    }

    /// Reports how a permitted call ended.
    pub fn record(&self, permit: Permit, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.machine.on_success(),
            Outcome::Failure => self.machine.on_error(),
            Outcome::Neutral => {}
        }
        drop(permit);
    }

    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.stats.state.load(Ordering::SeqCst))
    }

    pub fn stats(&self) -> &BreakerStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Duration = Duration::from_millis(60);

    fn fail(b: &Breaker) {
        let p = b.try_acquire().expect("permitted");
        b.record(p, Outcome::Failure);
    }

    #[test]
    fn opens_after_consecutive_failures_and_rejects() {
        let b = Breaker::new(3, OPEN);
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_acquire().unwrap_err(), Rejected);
        assert_eq!(b.stats().opened.load(Ordering::Relaxed), 1);
        assert_eq!(b.stats().rejected.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn neutral_outcomes_neither_count_nor_reset_the_streak() {
        let b = Breaker::new(3, OPEN);
        fail(&b);
        fail(&b);
        let p = b.try_acquire().unwrap();
        b.record(p, Outcome::Neutral); // a 404
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b);
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "the 404 did not reset the streak"
        );
        // ...while a success does.
        let b = Breaker::new(3, OPEN);
        fail(&b);
        fail(&b);
        let p = b.try_acquire().unwrap();
        b.record(p, Outcome::Success);
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    /// Runs `f` on a controlled clock: failsafe reads the time through `failsafe::clock`,
    /// which its own tests freeze and advance the same way (hidden from its docs, but
    /// public); nothing sleeps. Thread-local, so tests in parallel do not share it.
    fn on_controlled_clock(f: impl FnOnce(&mut dyn FnMut(Duration))) {
        failsafe::clock::freeze(|clock| f(&mut |d| clock.advance(d)));
    }

    #[test]
    fn half_open_admits_one_probe_at_a_time_then_closes_on_success() {
        on_controlled_clock(|advance| {
            let b = Breaker::new(1, OPEN);
            fail(&b);
            // Just before the (jittered, at least OPEN) period ends: still open.
            advance(OPEN.mul_f64(0.99));
            assert!(b.try_acquire().is_err(), "open until the period is over");
            // After the longest the first period can be (OPEN + 20 % jitter).
            advance(OPEN.mul_f64(0.22));
            let probe = b
                .try_acquire()
                .expect("the first call after the open period probes");
            assert_eq!(b.state(), BreakerState::HalfOpen);
            for _ in 0..10 {
                assert!(b.try_acquire().is_err(), "only one probe at a time");
            }
            b.record(probe, Outcome::Success);
            assert_eq!(b.state(), BreakerState::Closed);
            assert!(b.try_acquire().is_ok());
        });
    }

    #[test]
    fn a_failed_probe_reopens_for_longer() {
        on_controlled_clock(|advance| {
            let b = Breaker::new(1, OPEN);
            fail(&b);
            advance(OPEN.mul_f64(1.21));
            let probe = b.try_acquire().unwrap();
            b.record(probe, Outcome::Failure);
            assert_eq!(b.state(), BreakerState::Open);
            // The second period is at least twice the first: still open after 1.99x OPEN...
            advance(OPEN.mul_f64(1.99));
            assert!(b.try_acquire().is_err());
            assert_eq!(b.stats().opened.load(Ordering::Relaxed), 2);
            // ...and over after its longest, 2.4x OPEN.
            advance(OPEN.mul_f64(0.42));
            assert!(b.try_acquire().is_ok(), "probing again");
        });
    }

    #[test]
    fn an_abandoned_probe_frees_its_slot() {
        on_controlled_clock(|advance| {
            let b = Breaker::new(1, OPEN);
            fail(&b);
            advance(OPEN.mul_f64(1.21));
            drop(b.try_acquire().unwrap());
            assert!(b.try_acquire().is_ok(), "slot freed on drop");
        });
    }

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap() {
        let first = Duration::from_secs(30);
        let periods: Vec<Duration> = OpenBackoff::new(first).take(12).collect();
        assert!(periods[0] >= first && periods[0] <= first.mul_f64(1.2));
        assert!(periods[1] >= first * 2 && periods[1] <= (first * 2).mul_f64(1.2));
        assert!(periods.iter().all(|p| *p <= open_cap(first)));
        assert_eq!(*periods.last().unwrap(), open_cap(first));
        // Sub-second periods work (failsafe's own helpers would panic).
        assert!(
            OpenBackoff::new(Duration::from_millis(50)).next().unwrap()
                >= Duration::from_millis(50)
        );
    }
}
