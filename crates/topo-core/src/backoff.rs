//! [`Backoff`]: the one retry pause policy (capped exponential growth with jitter).

use std::time::Duration;

/// Pauses between retries: the first is `initial`, each next one `factor` times longer, never
/// over `max`; every pause is spread by up to `jitter` (a fraction) either way, so clients
/// that failed together do not retry together.
///
/// Call [`Backoff::next_delay`] before each retry and [`Backoff::reset`] once the retried
/// thing has worked *for a while* (a call that succeeds but then fails at once should not
/// bring the pauses back to `initial`).
///
/// ```
/// use std::time::Duration;
/// use topo_core::backoff::Backoff;
///
/// let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
/// let first = b.next_delay(); // 80..=120 ms with the default 20 % jitter
/// assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    current: Duration,
}

impl Backoff {
    /// Doubling pauses from `initial` up to `max`, with 20 % jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            factor: 2.0,
            jitter: 0.2,
            current: initial,
        }
    }

    /// The growth factor (at least 1).
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = if factor.is_finite() {
            factor.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// The jitter, a fraction between 0 (none) and 1 (a pause anywhere from 0 to twice its
    /// nominal length).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The pause before the next retry; the nominal pause then grows.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.current;
        self.current = scaled(nominal, self.factor).min(self.max);
        let spread = 1.0 + self.jitter * (2.0 * rand::random::<f64>() - 1.0);
        scaled(nominal, spread)
    }

    /// The longest pause.
    pub fn max_delay(&self) -> Duration {
        self.max
    }

    /// Back to the first pause.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// `d` times `by` (finite, not negative), saturating where `Duration::mul_f64` would panic
/// (a `max` near `Duration::MAX`, for "no cap").
fn scaled(d: Duration, by: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * by).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_bounded_jitter_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000)).with_jitter(0.2);
        for nominal in [100u64, 200, 400, 800, 1000, 1000] {
            let d = b.next_delay();
            assert!(
                d >= ms(nominal * 8 / 10) && d <= ms(nominal * 12 / 10),
                "{d:?} for nominal {nominal} ms"
            );
        }
        b.reset();
        let d = b.next_delay();
        assert!(d >= ms(80) && d <= ms(120), "after reset: {d:?}");

        let mut exact = Backoff::new(ms(10), ms(50))
            .with_factor(3.0)
            .with_jitter(0.0);
        let got: Vec<Duration> = (0..4).map(|_| exact.next_delay()).collect();
        assert_eq!(got, [ms(10), ms(30), ms(50), ms(50)]);
    }

    /// An uncapped backoff (`Duration::MAX`) saturates instead of panicking on overflow.
    #[test]
    fn uncapped_saturates() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::MAX);
        let mut last = Duration::ZERO;
        for _ in 0..200 {
            last = b.next_delay();
        }
        assert!(last > Duration::from_secs(u64::MAX / 2), "{last:?}");
    }
}
