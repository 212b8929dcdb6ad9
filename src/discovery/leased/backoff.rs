//! Retry pauses: exponential, with jitter from a seeded generator.

use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

/// Exponential backoff with equal jitter: each pause is half the step plus up to half
/// again at random.
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Steps from `min`, doubling up to `max` (at least `min`).
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The next pause.
    pub(super) fn next(&mut self, rng: &mut SmallRng) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.max);
        step / 2 + (step / 2).mul_f64(rng.random::<f64>())
    }

    /// Back to the first step, after a success.
    pub(super) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn pauses_double_up_to_the_max_with_jitter_in_the_upper_half() {
        let ms = Duration::from_millis;
        let mut rng = SmallRng::seed_from_u64(7);
        let mut b = Backoff::new(ms(100), ms(400));
        for step in [100, 200, 400, 400, 400] {
            let d = b.next(&mut rng);
            assert!(d >= ms(step) / 2 && d <= ms(step), "{d:?} for step {step}");
        }
        b.reset();
        assert!(b.next(&mut rng) <= ms(100));
    }

    #[test]
    fn the_same_seed_gives_the_same_pauses() {
        let pauses = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
            (0..8).map(|_| b.next(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(pauses(3), pauses(3));
        assert_ne!(pauses(3), pauses(4));
    }
}
