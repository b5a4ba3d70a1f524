//! Download progress on stderr, one file at a time. On a terminal: an
//! indicatif bar with bytes, speed and ETA. Elsewhere (CI logs, `nohup`):
//! one line when a file starts and one when it is done, as the training
//! progress does. With `--quiet` or `HF_HUB_DISABLE_PROGRESS_BARS`: nothing.

use std::io::IsTerminal;

use hf_hub::api::Progress;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// How downloads report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    Bar,
    Lines,
    Quiet,
}

impl Display {
    /// A bar on a terminal, plain lines elsewhere, nothing when quiet or
    /// when `HF_HUB_DISABLE_PROGRESS_BARS` is set (as for Python's stack).
    pub fn for_stderr(quiet: bool) -> Self {
        let disabled = std::env::var("HF_HUB_DISABLE_PROGRESS_BARS")
            .is_ok_and(|v| super::settings::is_true(&v));
        match (quiet || disabled, std::io::stderr().is_terminal()) {
            (true, _) => Display::Quiet,
            (false, true) => Display::Bar,
            (false, false) => Display::Lines,
        }
    }
}

/// The progress of one file, handed to `hf-hub` (which calls `init` when
/// the transfer starts, again when it (re)connects, then `update` with the
/// bytes already on disk and every chunk read).
pub struct FileProgress {
    display: Display,
    /// `repo/file`, as shown.
    label: String,
    bar: Option<ProgressBar>,
    total: u64,
}

impl FileProgress {
    pub fn new(display: Display, label: String) -> Self {
        Self {
            display,
            label,
            bar: None,
            total: 0,
        }
    }
}

impl Progress for FileProgress {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = size as u64;
        match (self.display, &self.bar) {
            (Display::Bar, Some(bar)) => bar.set_position(0),
            (Display::Bar, None) => {
                let bar = ProgressBar::new(self.total);
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg} {bar:30.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} [{eta}]",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message(self.label.clone());
                self.bar = Some(bar);
            }
            (Display::Lines, None) => {
                eprintln!("downloading {} ({})", self.label, HumanBytes(self.total));
                self.bar = Some(ProgressBar::hidden());
            }
            _ => {}
        }
    }

    fn update(&mut self, size: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(size as u64);
        }
    }

    fn finish(&mut self) {
        match (self.display, &self.bar) {
            (Display::Bar, Some(bar)) => bar.finish(),
            (Display::Lines, Some(_)) => eprintln!("downloaded {}", self.label),
            _ => {}
        }
    }
}
