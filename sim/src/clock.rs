//! The simulated clock: one clock for the whole cluster, running `speed` times faster than
//! the wall clock.
//!
//! `now = start + wall_elapsed × speed`. The clock starts at the wall-clock time of
//! [`crate::SimCluster::start`], so timestamps look like real ones. Every delay of the
//! simulated cluster (node boot, pod start-up and termination, the disruption controller's
//! two-minute expiry, node-monitor grace) is in sim-seconds and goes through this clock.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

/// The cluster's clock. Cheap to copy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SimClock {
    start_wall: Instant,
    start_sim: Timestamp,
    speed: f64,
}

impl SimClock {
    /// A clock starting now, at `speed` sim-seconds per wall second.
    pub(crate) fn new(speed: f64) -> Self {
        SimClock {
            start_wall: Instant::now(),
            start_sim: Timestamp::now(),
            speed,
        }
    }

    /// Sim-seconds per wall second.
    pub(crate) fn speed(&self) -> f64 {
        self.speed
    }

    /// The simulated time now.
    pub(crate) fn now(&self) -> Timestamp {
        let wall = self.start_wall.elapsed();
        let sim = wall.mul_f64(self.speed);
        self.start_sim
            .checked_add(SignedDuration::try_from(sim).unwrap_or(SignedDuration::MAX))
            .unwrap_or(Timestamp::MAX)
    }

    /// Wall milliseconds since the clock started.
    pub(crate) fn wall_ms(&self) -> u64 {
        u64::try_from(self.start_wall.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How long to wait on the wall clock until the simulated clock reads `at`
    /// (zero if it already has).
    pub(crate) fn wall_until(&self, at: Timestamp) -> Duration {
        let left = at.duration_since(self.now());
        if left.is_negative() {
            return Duration::ZERO;
        }
        Duration::try_from(left)
            .unwrap_or(Duration::MAX)
            .div_f64(self.speed)
    }
}

/// `at + secs` sim-seconds (fractions allowed).
pub(crate) fn add_secs(at: Timestamp, secs: f64) -> Timestamp {
    let d = SignedDuration::try_from_secs_f64(secs.max(0.0)).unwrap_or(SignedDuration::MAX);
    at.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// RFC 3339 with whole seconds, as Kubernetes writes `metav1.Time`.
pub(crate) fn rfc3339(at: Timestamp) -> String {
    Timestamp::from_second(at.as_second())
        .unwrap_or(at)
        .to_string()
}

/// RFC 3339 with microseconds, as Kubernetes writes `metav1.MicroTime`.
pub(crate) fn rfc3339_micro(at: Timestamp) -> String {
    let micros = at.as_microsecond();
    let t = Timestamp::from_microsecond(micros).unwrap_or(at);
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses an RFC 3339 time as found in objects.
pub(crate) fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

/// kubectl's short human age (`45s`, `5m`, `3h`, `2d3h`, `12d`), from
/// k8s.io/apimachinery `duration.HumanDuration`.
pub(crate) fn human_duration(d: SignedDuration) -> String {
    let secs = d.as_secs();
    if secs < -1 {
        return "<invalid>".to_string();
    }
    let secs = secs.max(0);
    if secs < 60 * 2 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = hours / 24;
        let dy = days % 365;
        return if dy == 0 {
            format!("{}y", days / 365)
        } else {
            format!("{}y{dy}d", days / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        let s = |n: i64| human_duration(SignedDuration::from_secs(n));
        assert_eq!(s(5), "5s");
        assert_eq!(s(119), "119s");
        assert_eq!(s(150), "2m30s");
        assert_eq!(s(600), "10m");
        assert_eq!(s(3 * 3600 + 60), "3h1m");
        assert_eq!(s(10 * 3600), "10h");
        assert_eq!(s(3 * 86400 + 3600), "3d1h");
        assert_eq!(s(30 * 86400), "30d");
    }

    #[test]
    fn times_print_like_kubernetes() {
        let t: Timestamp = "2024-05-01T10:00:00.123456789Z".parse().unwrap();
        assert_eq!(rfc3339(t), "2024-05-01T10:00:00Z");
        assert_eq!(rfc3339_micro(t), "2024-05-01T10:00:00.123456Z");
        assert_eq!(rfc3339(add_secs(t, 1.5)), "2024-05-01T10:00:01Z");
    }

    #[test]
    fn runs_at_its_speed() {
        let c = SimClock::new(1000.0);
        let a = c.now();
        std::thread::sleep(Duration::from_millis(20));
        let b = c.now();
        // at least 20 sim-seconds passed during 20 wall milliseconds
        assert!(b.duration_since(a) >= SignedDuration::from_secs(19));
        let later = add_secs(b, 1000.0);
        assert!(c.wall_until(later) <= Duration::from_secs(1));
    }
}
