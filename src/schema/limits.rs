//! `rate_limit` and the caller classes that share a tenant's quota (README, "Caller classes").

use std::num::NonZeroU32;
use std::time::Duration;

/// The longest pause an upstream 429 (or 423), or a peer's announcement, can impose on a tenant's
/// limiter: the retry ceiling used for token endpoints too. Past it the tenant sends one request
/// to see whether the upstream still refuses (README, "Behaviour where the spec was silent").
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

/// A `[[caller]]`'s `class`: the order in which a tenant's limiter serves waiting requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CallerClass {
    /// Served first (a storefront or checkout).
    Interactive,
    /// The default, and every anonymous request.
    #[default]
    Standard,
    /// Served last, but never shut out: it keeps `batch_share` of the contended slots.
    Batch,
}

impl CallerClass {
    /// Highest priority first.
    pub const ALL: [Self; 3] = [Self::Interactive, Self::Standard, Self::Batch];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|class| class.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interactive => "interactive",
            Self::Standard => "standard",
            Self::Batch => "batch",
        }
    }

    /// 0 for `interactive` … 2 for `batch`: an index into [`PerClass`] and a priority.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One value per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PerClass<T> {
    pub interactive: T,
    pub standard: T,
    pub batch: T,
}

impl<T> PerClass<T> {
    pub fn by(&self, class: CallerClass) -> &T {
        match class {
            CallerClass::Interactive => &self.interactive,
            CallerClass::Standard => &self.standard,
            CallerClass::Batch => &self.batch,
        }
    }
}

impl<T: Copy> PerClass<T> {
    pub fn all(value: T) -> Self {
        Self {
            interactive: value,
            standard: value,
            batch: value,
        }
    }

    pub fn get(&self, class: CallerClass) -> T {
        match class {
            CallerClass::Interactive => self.interactive,
            CallerClass::Standard => self.standard,
            CallerClass::Batch => self.batch,
        }
    }

    pub fn get_mut(&mut self, class: CallerClass) -> &mut T {
        match class {
            CallerClass::Interactive => &mut self.interactive,
            CallerClass::Standard => &mut self.standard,
            CallerClass::Batch => &mut self.batch,
        }
    }
}

/// `batch_share`: the least fraction of contended slots `batch` gets, in basis points (1–9999).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShare(u16);

impl BatchShare {
    pub const DEFAULT: Self = Self(1000);

    /// `None` unless `0 < fraction < 1` (to a basis point).
    pub fn from_fraction(fraction: f64) -> Option<Self> {
        let points = (fraction * 10_000.0).round();
        (1.0..=9_999.0).contains(&points).then_some(Self(points as u16))
    }

    pub fn basis_points(self) -> u16 {
        self.0
    }

    /// While higher classes wait, every `every()`-th slot goes to the oldest batch waiter:
    /// `floor(1 / share)`, so batch gets at least its share (`ceil` would give 25 % for 30 %).
    pub fn every(self) -> u32 {
        (10_000 / u32::from(self.0)).max(1)
    }
}

impl Default for BatchShare {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `rate_limit = { per_second, burst, max_wait, batch_share }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
    /// Longest a request of each class waits for a slot before 429.
    pub max_wait: PerClass<Duration>,
    pub batch_share: BatchShare,
    /// Extra spacing added to every slot beyond `1 / per_second`. A provider preset sets it where
    /// the provider counts strictly (CYBERBIZ), so that jitter between granting a slot and the
    /// request reaching the provider cannot squeeze one request too many into its window; an
    /// explicit `rate_limit` for that provider keeps it. Zero for every other tenant.
    pub headroom: Duration,
    /// The highest class of the callers that may use the tenant (`standard` with no callers). On
    /// the shared bucket it reserves slots ahead; the lower classes take a slot only when it is
    /// due, so they never push it back (README, "Caller classes").
    pub lead: CallerClass,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_arithmetic() {
        assert_eq!(BatchShare::DEFAULT.every(), 10);
        let share = |f| BatchShare::from_fraction(f).map(BatchShare::every);
        assert_eq!(share(0.25), Some(4));
        assert_eq!(
            share(0.3),
            Some(3),
            "one slot in 3 is at least 30 %; one in 4 would not be"
        );
        assert_eq!(share(0.5), Some(2));
        assert_eq!(share(0.0), None);
        assert_eq!(share(1.0), None);
        assert_eq!(share(-0.1), None);
    }
}
