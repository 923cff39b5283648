//! What kbg shows a person, apart from logs.
//!
//! stdout carries the result only: a human table or sentence, or one JSON / YAML
//! document with `-o json|yaml`, so scripts can parse it. stderr carries progress:
//! indicatif bars when stderr is a terminal, and plain step lines otherwise (CI logs,
//! tests). `tracing` logs are separate and off unless `-v`.

use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::cli::OutputFormat;

/// The user's terminal: result on stdout, progress on stderr.
#[derive(Clone)]
pub struct Ui {
    format: OutputFormat,
    tty: bool,
    multi: MultiProgress,
}

impl std::fmt::Debug for Ui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ui({:?}, tty: {})", self.format, self.tty)
    }
}

impl Ui {
    /// A Ui printing results in `format`; progress bars only when stderr is a terminal.
    pub fn new(format: OutputFormat) -> Self {
        let tty = std::io::stderr().is_terminal();
        let multi = if tty {
            MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        };
        Ui { format, tty, multi }
    }

    /// The result format.
    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// A step, on stderr: `kbg: cordoned 3 nodes of alpha`.
    pub fn step(&self, msg: impl Display) {
        let line = format!("kbg: {msg}");
        if self.tty {
            self.multi.suspend(|| eprintln!("{line}"));
        } else {
            eprintln!("{line}");
        }
    }

    /// A warning, on stderr.
    pub fn warn(&self, msg: impl Display) {
        self.step(format_args!("warning: {msg}"));
    }

    /// A progress bar of `len` steps, drawn only on a terminal.
    pub fn bar(&self, len: u64, prefix: &str) -> ProgressBar {
        if !self.tty {
            return ProgressBar::hidden();
        }
        let pb = self.multi.add(ProgressBar::new(len));
        pb.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        pb.set_prefix(prefix.to_string());
        pb
    }

    /// A spinner with a message, drawn only on a terminal.
    pub fn spinner(&self, msg: impl Into<String>) -> ProgressBar {
        if !self.tty {
            return ProgressBar::hidden();
        }
        let pb = self.multi.add(ProgressBar::new_spinner());
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"),
        );
        pb.set_message(msg.into());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }

    /// Print the result: `human(value)` for tables, else `value` as JSON or YAML.
    pub fn result<T: Serialize>(&self, value: &T, human: impl FnOnce(&T) -> String) {
        let text = match self.format {
            OutputFormat::Table => human(value),
            OutputFormat::Json => serde_json::to_string_pretty(value).expect("results serialise"),
            OutputFormat::Yaml => serde_saphyr::to_string(value).expect("results serialise"),
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", text.trim_end());
        let _ = out.flush();
    }
}

/// A table in kubectl's style: a header row, columns left-aligned, three spaces apart.
pub fn table<const N: usize>(
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_header(header);
    for r in rows {
        t.add_row(r);
    }
    for c in t.column_iter_mut() {
        c.set_padding((0, 3));
    }
    t.lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_look_like_kubectl() {
        let t = super::table(
            ["NODE", "READY"],
            [
                ["alpha-0".to_string(), "True".to_string()],
                ["b".to_string(), "False".to_string()],
            ],
        );
        assert_eq!(t, "NODE      READY\nalpha-0   True\nb         False");
    }
}
