//! Ctrl-C and SIGTERM: the first one asks the loop to finish its optimizer
//! step, write a checkpoint and exit; a second one exits at once (signal-hook's
//! conditional shutdown), for a user who really means it.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Whether a stop was requested. Installs the handlers on first use; where
/// they cannot be installed, the run goes on without them.
pub fn requested() -> bool {
    flag().load(Ordering::SeqCst)
}

/// Installs the handlers (a run is about to train). A request is never
/// cleared: after Ctrl-C, every later stage or sweep point of the process
/// stops too.
pub fn install() {
    flag();
}

fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in signal_hook::consts::TERM_SIGNALS {
            // Order matters: the exit check runs before the flag is set, so
            // only a second signal exits at once.
            let _ = signal_hook::flag::register_conditional_shutdown(*signal, 130, flag.clone());
            let _ = signal_hook::flag::register(*signal, flag.clone());
        }
        flag
    })
}
