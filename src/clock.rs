//! kbg's clock: wall time, optionally running faster to match a simulated cluster.
//!
//! Against a real cluster every wait of kbg's (retry intervals, soaks, timeouts, lease
//! durations) is wall-clock time. Against a simulated cluster that runs at a speed factor
//! (`kbg sim serve --speed 60`: one simulated minute per wall second), kbg's waits must
//! shrink by the same factor, or a "5 s" retry would last five simulated minutes and
//! every figure measured in cluster time would be wrong. `--clock-speed` (environment
//! `KBG_CLOCK_SPEED`) sets that factor; durations given to kbg stay in cluster seconds and
//! [`Clock`] converts them to wall time at the one place kbg sleeps or times out.

use std::future::Future;
use std::time::Duration;

/// The environment variable that sets the clock speed when no flag does.
pub const CLOCK_SPEED_ENV: &str = "KBG_CLOCK_SPEED";

/// A clock whose durations are cluster seconds and whose sleeps are `duration / speed`
/// of wall time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    speed: f64,
}

/// A deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?} (cluster time)")]
pub struct Elapsed(pub Duration);

impl Default for Clock {
    fn default() -> Self {
        Clock::real()
    }
}

impl Clock {
    /// Wall-clock time: speed 1.
    pub fn real() -> Self {
        Clock { speed: 1.0 }
    }

    /// A clock running `speed` times faster than the wall clock.
    ///
    /// # Errors
    /// A message naming `--clock-speed` when `speed` is not a finite number > 0.
    pub fn with_speed(speed: f64) -> Result<Self, String> {
        if speed.is_finite() && speed > 0.0 {
            Ok(Clock { speed })
        } else {
            Err(format!(
                "--clock-speed: {speed} is not a number greater than 0"
            ))
        }
    }

    /// The speed factor: cluster seconds per wall second.
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// How long `cluster` (cluster time) lasts on the wall clock.
    pub fn to_wall(&self, cluster: Duration) -> Duration {
        cluster.div_f64(self.speed)
    }

    /// How much cluster time `wall` (wall time) stands for.
    pub fn to_cluster(&self, wall: Duration) -> Duration {
        wall.mul_f64(self.speed)
    }

    /// Sleep for `cluster` seconds of cluster time.
    pub async fn sleep(&self, cluster: Duration) {
        tokio::time::sleep(self.to_wall(cluster)).await;
    }

    /// Run `fut` with a deadline of `cluster` seconds of cluster time.
    ///
    /// # Errors
    /// [`Elapsed`] (carrying the cluster-time limit) when the deadline passes first.
    pub async fn timeout<F: Future>(
        &self,
        cluster: Duration,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        tokio::time::timeout(self.to_wall(cluster), fut)
            .await
            .map_err(|_| Elapsed(cluster))
    }

    /// A monotonic instant, for measuring cluster time with [`Clock::elapsed`].
    pub fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    /// The cluster time since `start`.
    pub fn elapsed(&self, start: tokio::time::Instant) -> Duration {
        self.to_cluster(start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_between_cluster_and_wall_time() {
        let c = Clock::with_speed(60.0).unwrap();
        assert_eq!(c.to_wall(Duration::from_secs(300)), Duration::from_secs(5));
        assert_eq!(
            c.to_cluster(Duration::from_secs(2)),
            Duration::from_secs(120)
        );
        assert_eq!(
            Clock::real().to_wall(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn refuses_speeds_that_are_not_positive() {
        for s in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = Clock::with_speed(s).unwrap_err();
            assert!(e.starts_with("--clock-speed"), "{e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_count_in_cluster_time() {
        let c = Clock::with_speed(10.0).unwrap();
        let r = c
            .timeout(Duration::from_secs(10), std::future::pending::<()>())
            .await;
        assert_eq!(r, Err(Elapsed(Duration::from_secs(10))));
        assert_eq!(c.timeout(Duration::from_secs(10), async { 7 }).await, Ok(7));
    }
}
