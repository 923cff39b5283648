//! The juju command lines kbg runs, spelled for the CLI's major version.
//!
//! Juju 3 renamed several commands of 2.9; kbg detects the version once (`juju version`)
//! and builds each command line here, in pure functions with table tests:
//!
//! | what                  | Juju 3.x                                   | Juju 2.9                                         |
//! |-----------------------|--------------------------------------------|--------------------------------------------------|
//! | a command on a unit   | `exec --unit U --timeout Ns -- SCRIPT`     | `run --unit U --timeout Ns -- SCRIPT`            |
//! | a charm action        | `run U… ACTION k=v --wait=Ns`              | `run-action U… ACTION k=v --wait=Ns`             |
//! | action output         | keyed by unit (`beta/0`)                   | keyed by unit tag (`unit-beta-0`)                |
//! | exec output           | `{unit: {results: {return-code, stdout}}}` | `[{UnitId, ReturnCode, Stdout, Stderr}]`         |
//! | upgrade a charm       | `refresh APP --channel C`                  | `upgrade-charm APP --channel C`                  |
//! | relate                | `integrate A B`                            | `add-relation A B`                               |
//! | OS                    | `--base ubuntu@22.04`                      | `--series jammy`                                 |
//! | remove without asking | `remove-unit/-application … --no-prompt`   | (no prompt, no flag)                             |
//!
//! Both take `-m MODEL` after the command name and `--format=json` for parseable output.

use std::path::Path;

/// The Juju CLI's version, from `juju version` (`3.6.4-genericlinux-amd64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct JujuVersion {
    /// `3` in 3.6.4.
    pub major: u32,
    /// `6` in 3.6.4.
    pub minor: u32,
}

impl JujuVersion {
    /// Parse what `juju version` prints (optionally JSON-quoted, as `--format=json`
    /// prints it).
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim().trim_matches('"');
        let mut parts = t.split(['.', '-']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(JujuVersion { major, minor })
    }

    /// Whether this CLI speaks Juju 3 syntax (3.0 and later).
    pub fn is_v3(self) -> bool {
        self.major >= 3
    }
}

/// Ubuntu series ↔ base, for translating between the two spellings.
const UBUNTU: [(&str, &str); 8] = [
    ("16.04", "xenial"),
    ("18.04", "bionic"),
    ("20.04", "focal"),
    ("22.04", "jammy"),
    ("23.10", "mantic"),
    ("24.04", "noble"),
    ("24.10", "oracular"),
    ("25.04", "plucky"),
];

/// `jammy` for `ubuntu@22.04`.
pub fn series_of_base(base: &str) -> Option<&'static str> {
    let version = base.strip_prefix("ubuntu@")?;
    UBUNTU.iter().find(|(v, _)| *v == version).map(|(_, s)| *s)
}

/// `ubuntu@22.04` for `jammy`.
pub fn base_of_series(series: &str) -> Option<String> {
    UBUNTU
        .iter()
        .find(|(_, s)| *s == series)
        .map(|(v, _)| format!("ubuntu@{v}"))
}

/// What `deploy` needs besides the application's name.
#[derive(Debug)]
pub(crate) struct Deploy<'a> {
    pub charm: &'a str,
    pub application: &'a str,
    pub channel: &'a str,
    pub units: usize,
    pub constraints: Option<&'a str>,
    pub base: Option<&'a str>,
    pub series: Option<&'a str>,
    /// A YAML file `{application: {option: value}}`, never key=value on the command line
    /// (options may be secret and argv is visible to every user of the machine).
    pub config_file: Option<&'a Path>,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

/// The command lines for one CLI version.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Syntax(pub JujuVersion);

impl Syntax {
    pub fn version() -> Vec<String> {
        s(&["version"])
    }

    pub fn status(application: &str) -> Vec<String> {
        s(&["status", "--format=json", application])
    }

    pub fn deploy(self, d: &Deploy<'_>) -> Vec<String> {
        let mut v = s(&[
            "deploy",
            d.charm,
            d.application,
            "--channel",
            d.channel,
            "-n",
            &d.units.to_string(),
        ]);
        if let Some(c) = d.constraints {
            v.extend(s(&["--constraints", c]));
        }
        let base = d
            .base
            .map(ToString::to_string)
            .or_else(|| d.series.and_then(base_of_series).filter(|_| self.0.is_v3()));
        let series = d.series.map(ToString::to_string).or_else(|| {
            d.base
                .and_then(series_of_base)
                .map(ToString::to_string)
                .filter(|_| !self.0.is_v3())
        });
        if self.0.is_v3() {
            if let Some(b) = base {
                v.extend(["--base".to_string(), b]);
            }
        } else if let Some(se) = series {
            v.extend(["--series".to_string(), se]);
        }
        if let Some(f) = d.config_file {
            v.extend(["--config".to_string(), f.display().to_string()]);
        }
        v
    }

    pub fn add_unit(application: &str, n: usize) -> Vec<String> {
        s(&["add-unit", application, "-n", &n.to_string()])
    }

    pub fn remove_units(self, units: &[String]) -> Vec<String> {
        let mut v = s(&["remove-unit"]);
        v.extend(units.iter().cloned());
        if self.0.is_v3() {
            v.push("--no-prompt".into());
        }
        v
    }

    pub fn remove_application(self, application: &str) -> Vec<String> {
        let mut v = s(&["remove-application", application]);
        if self.0.is_v3() {
            v.push("--no-prompt".into());
        }
        v
    }

    pub fn relate(self, a: &str, b: &str) -> Vec<String> {
        let cmd = if self.0.is_v3() {
            "integrate"
        } else {
            "add-relation"
        };
        s(&[cmd, a, b])
    }

    pub fn exec(self, unit: &str, script: &str, timeout_secs: u64) -> Vec<String> {
        let cmd = if self.0.is_v3() { "exec" } else { "run" };
        s(&[
            cmd,
            "--format=json",
            "--unit",
            unit,
            "--timeout",
            &format!("{timeout_secs}s"),
            "--",
            script,
        ])
    }

    pub fn action(
        self,
        units: &[String],
        action: &str,
        params: &[(String, String)],
        wait_secs: u64,
    ) -> Vec<String> {
        let cmd = if self.0.is_v3() { "run" } else { "run-action" };
        let mut v = s(&[cmd, "--format=json", &format!("--wait={wait_secs}s")]);
        v.extend(units.iter().cloned());
        v.push(action.into());
        v.extend(params.iter().map(|(k, val)| format!("{k}={val}")));
        v
    }

    pub fn refresh(self, application: &str, channel: Option<&str>) -> Vec<String> {
        let cmd = if self.0.is_v3() {
            "refresh"
        } else {
            "upgrade-charm"
        };
        let mut v = s(&[cmd, application]);
        if let Some(c) = channel {
            v.extend(s(&["--channel", c]));
        }
        v
    }

    pub fn config_file(application: &str, file: &Path) -> Vec<String> {
        s(&["config", application, "--file", &file.display().to_string()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V3: Syntax = Syntax(JujuVersion { major: 3, minor: 6 });
    const V29: Syntax = Syntax(JujuVersion { major: 2, minor: 9 });

    fn line(v: Vec<String>) -> String {
        v.join(" ")
    }

    #[test]
    fn versions_parse_from_what_juju_prints() {
        assert_eq!(
            JujuVersion::parse("3.6.4-genericlinux-amd64\n"),
            Some(JujuVersion { major: 3, minor: 6 })
        );
        assert_eq!(
            JujuVersion::parse("\"2.9.45-ubuntu-amd64\""),
            Some(JujuVersion { major: 2, minor: 9 })
        );
        assert_eq!(JujuVersion::parse("juju"), None);
        assert!(!JujuVersion { major: 2, minor: 9 }.is_v3());
    }

    #[test]
    fn deploy_spells_the_os_for_the_version() {
        let d = Deploy {
            charm: "kubernetes-worker",
            application: "beta",
            channel: "1.31/stable",
            units: 3,
            constraints: Some("cores=4 mem=16G"),
            base: Some("ubuntu@22.04"),
            series: None,
            config_file: Some(Path::new("/tmp/c.yaml")),
        };
        assert_eq!(
            V3.deploy(&d),
            [
                "deploy",
                "kubernetes-worker",
                "beta",
                "--channel",
                "1.31/stable",
                "-n",
                "3",
                "--constraints",
                "cores=4 mem=16G",
                "--base",
                "ubuntu@22.04",
                "--config",
                "/tmp/c.yaml"
            ]
        );
        assert!(line(V29.deploy(&d)).contains("--series jammy --config"));
        let by_series = Deploy {
            base: None,
            series: Some("noble"),
            ..d
        };
        assert!(line(V3.deploy(&by_series)).contains("--base ubuntu@24.04"));
        assert!(line(V29.deploy(&by_series)).contains("--series noble"));
        let neither = Deploy {
            base: None,
            series: None,
            constraints: None,
            config_file: None,
            ..by_series
        };
        assert_eq!(
            line(V3.deploy(&neither)),
            "deploy kubernetes-worker beta --channel 1.31/stable -n 3"
        );
    }

    #[test]
    fn renamed_commands() {
        let units = vec!["beta/0".to_string(), "beta/2".to_string()];
        let table = [
            (
                line(V3.exec("beta/0", "uname -r", 60)),
                "exec --format=json --unit beta/0 --timeout 60s -- uname -r",
            ),
            (
                line(V29.exec("beta/0", "uname -r", 60)),
                "run --format=json --unit beta/0 --timeout 60s -- uname -r",
            ),
            (
                line(V3.action(
                    &units,
                    "pause",
                    &[
                        ("delete-local-data".into(), "true".into()),
                        ("force".into(), "false".into()),
                    ],
                    900,
                )),
                "run --format=json --wait=900s beta/0 beta/2 pause delete-local-data=true force=false",
            ),
            (
                line(V29.action(&units, "resume", &[], 900)),
                "run-action --format=json --wait=900s beta/0 beta/2 resume",
            ),
            (
                line(V3.refresh("kubernetes-control-plane", Some("1.32/stable"))),
                "refresh kubernetes-control-plane --channel 1.32/stable",
            ),
            (
                line(V29.refresh("kubernetes-master", Some("1.32/stable"))),
                "upgrade-charm kubernetes-master --channel 1.32/stable",
            ),
            (
                line(V3.relate("beta:kube-control", "kubernetes-control-plane:kube-control")),
                "integrate beta:kube-control kubernetes-control-plane:kube-control",
            ),
            (
                line(V29.relate("beta:certificates", "easyrsa:client")),
                "add-relation beta:certificates easyrsa:client",
            ),
            (
                line(V3.remove_units(&units)),
                "remove-unit beta/0 beta/2 --no-prompt",
            ),
            (line(V29.remove_units(&units)), "remove-unit beta/0 beta/2"),
            (
                line(V3.remove_application("beta")),
                "remove-application beta --no-prompt",
            ),
            (
                line(V29.remove_application("beta")),
                "remove-application beta",
            ),
            (line(Syntax::add_unit("beta", 2)), "add-unit beta -n 2"),
            (line(Syntax::status("beta")), "status --format=json beta"),
        ];
        for (got, want) in table {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn bases_and_series_translate_both_ways() {
        assert_eq!(series_of_base("ubuntu@22.04"), Some("jammy"));
        assert_eq!(base_of_series("focal").as_deref(), Some("ubuntu@20.04"));
        assert_eq!(series_of_base("centos@7"), None);
        assert_eq!(base_of_series("warty"), None);
    }
}
