use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::{ErrorKind, ProviderError, Result};

/// One record in a [`Ledger`]: a JSON value and the version it was read at.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerEntry {
    /// The stored value.
    pub value: serde_json::Value,
    /// An opaque version; pass it back to [`Ledger::store`] to write over exactly this
    /// value (for kbg's ConfigMap ledger, the ConfigMap's `resourceVersion`).
    pub version: String,
}

/// Where a provider keeps what only it knows and must survive kbg's process: which
/// bare-metal hosts a pool holds, for instance.
///
/// kbg implements it over its state in the cluster (a ConfigMap written with optimistic
/// concurrency), so the record is shared by every operator and survives a lost laptop.
/// Writes are compare-and-swap: two kbg runs taking hosts from one inventory cannot both
/// win.
#[async_trait]
pub trait Ledger: Send + Sync + std::fmt::Debug {
    /// The record under `key`, if any.
    ///
    /// # Errors
    /// When the store cannot be read.
    async fn load(&self, key: &str) -> Result<Option<LedgerEntry>>;

    /// Write `value` under `key` if the record is still at `expected` (`None`: the key
    /// must not exist yet). Returns the new version.
    ///
    /// # Errors
    /// [`ErrorKind::Transient`] with a message containing `conflict` when someone else
    /// wrote first: load again and redo the change. Otherwise when the store cannot be
    /// written.
    async fn store(
        &self,
        key: &str,
        value: serde_json::Value,
        expected: Option<&str>,
    ) -> Result<String>;
}

/// A [`Ledger`] in memory: for unit tests and for runs that need no persistence.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    records: Mutex<BTreeMap<String, (serde_json::Value, u64)>>,
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn load(&self, key: &str) -> Result<Option<LedgerEntry>> {
        let records = self.records.lock().expect("ledger lock");
        Ok(records.get(key).map(|(value, v)| LedgerEntry {
            value: value.clone(),
            version: v.to_string(),
        }))
    }

    async fn store(
        &self,
        key: &str,
        value: serde_json::Value,
        expected: Option<&str>,
    ) -> Result<String> {
        let mut records = self.records.lock().expect("ledger lock");
        let current = records.get(key).map(|(_, v)| v.to_string());
        if current.as_deref() != expected {
            return Err(ProviderError::new(
                "ledger",
                ErrorKind::Transient,
                format!("conflict writing {key}: it changed since it was read"),
            ));
        }
        let next = records.get(key).map_or(1, |(_, v)| v + 1);
        records.insert(key.to_string(), (value, next));
        Ok(next.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn writes_are_compare_and_swap() {
        let l = MemoryLedger::default();
        assert_eq!(l.load("hosts").await.unwrap(), None);
        let v1 = l.store("hosts", json!({"h1": "beta"}), None).await.unwrap();
        // A second writer that also read "nothing" loses.
        let err = l
            .store("hosts", json!({"h1": "gamma"}), None)
            .await
            .unwrap_err();
        assert!(
            err.is_retryable() && err.to_string().contains("conflict"),
            "{err}"
        );
        let e = l.load("hosts").await.unwrap().unwrap();
        assert_eq!(e.value, json!({"h1": "beta"}));
        assert_eq!(e.version, v1);
        let v2 = l.store("hosts", json!({}), Some(&v1)).await.unwrap();
        assert_ne!(v1, v2);
        assert!(
            l.store("hosts", json!({"stale": true}), Some(&v1))
                .await
                .is_err()
        );
    }
}
