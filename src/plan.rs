//! Batches: which source nodes `kbg migrate` drains together.
//!
//! `--batch-size` is a node count (`3`) or a percentage of the source pool (`25%`), as
//! GKE's blue/green `batchNodeCount` / `batchPercentage` and AKS's `drainBatchSize`. A
//! percentage's fractional nodes are rounded up (AKS's rule), so every batch holds at
//! least one node and `100%` drains the pool at once.

use std::fmt;
use std::str::FromStr;

/// How many source nodes to drain at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    /// This many nodes (at least 1).
    Nodes(usize),
    /// This percentage of the source pool's nodes (1 to 100), rounded up.
    Percent(u8),
}

/// A `--batch-size` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--batch-size: {value:?} {problem}")]
pub struct BatchSizeError {
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl FromStr for BatchSize {
    type Err = BatchSizeError;

    /// `"3"` → `Nodes(3)`, `"25%"` → `Percent(25)`.
    ///
    /// # Errors
    /// [`BatchSizeError`], naming `--batch-size`, for anything else, zero, or a
    /// percentage above 100.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |problem| BatchSizeError {
            value: s.to_string(),
            problem,
        };
        let text = s.trim();
        if let Some(percent) = text.strip_suffix('%') {
            let p: u8 = percent
                .trim()
                .parse()
                .map_err(|_| fail("is not a whole percentage such as 25%"))?;
            return match p {
                0 => Err(fail("must be at least 1%")),
                1..=100 => Ok(BatchSize::Percent(p)),
                _ => Err(fail("must be at most 100%")),
            };
        }
        match text.parse::<usize>() {
            Ok(0) => Err(fail("must be at least 1 node")),
            Ok(n) => Ok(BatchSize::Nodes(n)),
            Err(_) => Err(fail(
                "is not a node count such as 3 or a percentage such as 25%",
            )),
        }
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Nodes(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl BatchSize {
    /// Nodes per batch for a pool of `pool` nodes: at least 1, at most `pool` (when the
    /// pool is not empty).
    pub fn nodes_per_batch(&self, pool: usize) -> usize {
        let n = match *self {
            BatchSize::Nodes(n) => n,
            BatchSize::Percent(p) => (pool * usize::from(p)).div_ceil(100),
        };
        n.clamp(1, pool.max(1))
    }
}

/// Split `nodes` into batches of `size`, in the order given (the caller sorts; kbg sorts
/// by name so a rerun plans the same batches). Every node is in exactly one batch; only
/// the last batch may be smaller.
pub fn plan_batches(nodes: &[String], size: BatchSize) -> Vec<Vec<String>> {
    nodes
        .chunks(size.nodes_per_batch(nodes.len()))
        .map(<[String]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_and_percentages() {
        let ok = [
            ("1", BatchSize::Nodes(1)),
            ("3", BatchSize::Nodes(3)),
            (" 12 ", BatchSize::Nodes(12)),
            ("25%", BatchSize::Percent(25)),
            ("1%", BatchSize::Percent(1)),
            ("100%", BatchSize::Percent(100)),
        ];
        for (text, expected) in ok {
            assert_eq!(text.parse::<BatchSize>(), Ok(expected), "{text:?}");
        }
        for text in [
            "", "0", "0%", "101%", "-1", "2.5", "25 %%", "%", "ten", "1e3", "3 nodes",
        ] {
            let err = text.parse::<BatchSize>().expect_err(text);
            assert!(err.to_string().starts_with("--batch-size: "), "{err}");
        }
        assert_eq!(BatchSize::Percent(25).to_string(), "25%");
        assert_eq!(BatchSize::Nodes(3).to_string(), "3");
    }

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    fn sizes(batches: &[Vec<String>]) -> Vec<usize> {
        batches.iter().map(Vec::len).collect()
    }

    #[test]
    fn plans_batches() {
        let rows: &[(usize, BatchSize, &[usize])] = &[
            (10, BatchSize::Nodes(3), &[3, 3, 3, 1]),
            (10, BatchSize::Nodes(10), &[10]),
            (10, BatchSize::Nodes(50), &[10]),
            (10, BatchSize::Nodes(1), &[1; 10]),
            (10, BatchSize::Percent(25), &[3, 3, 3, 1]),
            (10, BatchSize::Percent(10), &[1; 10]),
            (10, BatchSize::Percent(100), &[10]),
            (3, BatchSize::Percent(1), &[1, 1, 1]),
            (4, BatchSize::Percent(50), &[2, 2]),
            (1000, BatchSize::Percent(10), &[100; 10]),
            (0, BatchSize::Nodes(3), &[]),
            (0, BatchSize::Percent(50), &[]),
        ];
        for (pool, size, expected) in rows {
            let nodes = names(*pool);
            let batches = plan_batches(&nodes, *size);
            assert_eq!(sizes(&batches), *expected, "{pool} nodes by {size}");
            assert_eq!(batches.concat(), nodes, "every node once, in order");
        }
    }
}
