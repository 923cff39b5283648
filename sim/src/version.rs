//! Kubernetes version strings (`v1.33.1`, `v1.31.2-eks-abc123`).

/// `(major, minor, patch)` of a Kubernetes version, with or without the `v` and with any
/// `-suffix`.
pub(crate) fn parse(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.strip_prefix('v').unwrap_or(v);
    let core = v.split(['-', '+']).next()?;
    let mut it = core.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = it.next().map_or(Some(0), |p| p.parse().ok())?;
    if it.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// The etcd image tag kubeadm ships with a Kubernetes minor version.
pub(crate) fn etcd_tag(minor: u64) -> &'static str {
    match minor {
        0..=25 => "3.5.6-0",
        26 => "3.5.9-0",
        27 => "3.5.9-0",
        28 => "3.5.9-0",
        29 => "3.5.10-0",
        30 => "3.5.12-0",
        31 => "3.5.15-0",
        32 => "3.5.16-0",
        _ => "3.5.21-0",
    }
}

/// `/version`'s body for a version.
pub(crate) fn version_info(v: &str) -> serde_json::Value {
    let (major, minor, _) = parse(v).unwrap_or((1, 33, 0));
    serde_json::json!({
        "major": major.to_string(),
        "minor": minor.to_string(),
        "emulationMajor": major.to_string(),
        "emulationMinor": minor.to_string(),
        "minCompatibilityMajor": major.to_string(),
        "minCompatibilityMinor": (minor.saturating_sub(1)).to_string(),
        "gitVersion": v,
        "gitCommit": crate::controllers::kubelet::digest(v)[..40].to_string(),
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_versions() {
        assert_eq!(parse("v1.33.1"), Some((1, 33, 1)));
        assert_eq!(parse("1.31.2-eks-abc123"), Some((1, 31, 2)));
        assert_eq!(parse("v1.29"), Some((1, 29, 0)));
        assert_eq!(parse("banana"), None);
        assert_eq!(parse("v1.2.3.4"), None);
        assert_eq!(version_info("v1.30.2")["minor"], "30");
    }
}
