//! The `align` command line. Argument parsing only: every behaviour lives in
//! the library, so tests exercise the same code paths as users.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "align",
    version,
    about = "SFT + DPO for Gemma, with TRL's numbers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags shared by every command that runs a recipe.
#[derive(Args, Clone, Debug, Default)]
struct RunFlags {
    /// Override a recipe key: KEY=VALUE (value parsed as YAML; nested keys with dots).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Backend: flex (CPU, default) or cuda (needs the `cuda` feature).
    #[arg(long)]
    backend: Option<String>,
    /// Devices, e.g. `cpu:0,cpu:1`, `cuda:all`, `cuda:0,1`.
    #[arg(long)]
    devices: Option<String>,
    /// Only warnings and errors on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run every stage of a chained recipe (SFT then DPO), or the one stage of a handbook config.
    Train {
        recipe: PathBuf,
        #[command(flatten)]
        flags: RunFlags,
        /// Resolve everything, print the plan and the memory estimate, run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Rerun stages whose output_dir already holds a finished model.
        #[arg(long)]
        force: bool,
    },
    /// One SFT stage from a handbook-style config.
    Sft {
        config: PathBuf,
        #[command(flatten)]
        flags: RunFlags,
        #[arg(long)]
        dry_run: bool,
    },
    /// One DPO stage from a handbook-style config.
    Dpo {
        config: PathBuf,
        #[command(flatten)]
        flags: RunFlags,
        #[arg(long)]
        dry_run: bool,
    },
    /// Evaluation only (eval split), metrics with the eval_ prefix.
    Eval {
        config: PathBuf,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// What the trainer sees: rendered texts and token ids, one JSON object per row.
    Data {
        config: PathBuf,
        /// Split to show (default: the first train split).
        #[arg(long)]
        split: Option<String>,
        /// Show at most N rows.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Sample from a checkpoint with its chat template.
    Generate {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        prompt: Option<String>,
    },
    /// Hyperparameter ablations over a grid of recipe keys.
    Sweep {
        recipe: PathBuf,
        #[arg(long = "grid", value_name = "KEY=V1,V2")]
        grid: Vec<String>,
    },
    /// Compare finished runs: a table and plots.
    Report { dirs: Vec<PathBuf> },
    /// Print a Hugging Face Gemma folder's shape, parameter count and the
    /// language-model loss of one forward pass over a sample text.
    Inspect {
        #[arg(long)]
        model: PathBuf,
        /// Text to score (default: a short sample conversation rendered with the chat template).
        #[arg(long)]
        text: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect { model, text } => {
            let report = align::model::inspect::inspect(&model, text.as_deref())
                .with_context(|| format!("inspecting {}", model.display()))?;
            println!("{report}");
            Ok(())
        }
        Command::Train { .. } => not_yet("train"),
        Command::Sft { .. } => not_yet("sft"),
        Command::Dpo { .. } => not_yet("dpo"),
        Command::Eval { .. } => not_yet("eval"),
        Command::Data { .. } => not_yet("data"),
        Command::Generate { .. } => not_yet("generate"),
        Command::Sweep { .. } => not_yet("sweep"),
        Command::Report { .. } => not_yet("report"),
    }
}

fn not_yet(command: &str) -> Result<()> {
    bail!("`align {command}` is not implemented yet")
}
