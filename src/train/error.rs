//! Why a training loop stopped: a number that is not finite, no data, a
//! hook's stop, or (data parallel) a replica or an exchange that failed.

/// Training stopped before its last step.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("step {step}: {what} is {value} (not finite); training stopped")]
    NonFinite {
        step: usize,
        what: &'static str,
        value: f64,
    },
    #[error("the training set has no micro-batches")]
    NoData,
    #[error("writing metrics: {0}")]
    Log(#[from] std::io::Error),
    /// A hook asked the loop to stop (an interrupt, after its checkpoint).
    #[error("{0}")]
    Stopped(String),
    #[error("{0}")]
    Hook(String),
    /// A replica of a data-parallel run failed; `error` is its own message
    /// on the failed replica, `None` on the others (they only saw its flag).
    #[error(
        "device {device} failed in {phase} {step}: {}",
        error.as_deref().unwrap_or("(its error is reported by that device)")
    )]
    DeviceFailed {
        device: String,
        phase: &'static str,
        step: usize,
        error: Option<String>,
    },
    /// burn-collective could not complete an exchange.
    #[error("device {device}: {what} of step {step} failed in burn-collective: {error}")]
    Collective {
        device: String,
        what: &'static str,
        step: usize,
        error: String,
    },
}

impl TrainError {
    /// An error that only follows another replica's failure (that replica
    /// reports the cause).
    pub fn is_secondary(&self) -> bool {
        matches!(
            self,
            TrainError::DeviceFailed { error: None, .. } | TrainError::Collective { .. }
        )
    }

    /// Fails with [`TrainError::NonFinite`] unless `value` is finite.
    pub fn check_finite(step: usize, what: &'static str, value: f64) -> Result<(), TrainError> {
        if value.is_finite() {
            Ok(())
        } else {
            Err(TrainError::NonFinite { step, what, value })
        }
    }
}
