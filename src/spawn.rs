//! Every task btc spawns goes through [`named`]: it is counted by a
//! [`TaskTracker`] (so shutdown can wait for it) and runs inside a tracing
//! span that names it, so a log line or a panic message says which task it
//! came from. A panic inside one task ends only that task: tokio catches it,
//! the task's drop guards give back what it held, and the panic hook in
//! `main.rs` logs one line instead of a backtrace over the progress bars.

use std::future::Future;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Spawns `fut` on the runtime, tracked by `tracker`, in a span named `name`.
pub fn named<F>(tracker: &TaskTracker, name: &'static str, fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tracker.spawn(fut.instrument(tracing::debug_span!("task", name)))
}
