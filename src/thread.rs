//! A subsystem on a thread of its own, with a current-thread tokio runtime: traffic and capture keep their
//! state single-threaded and off the main runtime, and their task (awaited by `app`) ends with the thread's result.

use anyhow::{Result, anyhow};

/// Runs `f()`'s future on a new thread named `name`; resolves to its result, or an error if the thread panicked.
pub async fn on_own_thread<F, Fut>(name: &'static str, f: F) -> Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>>,
{
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(f()));
        let _ = done_tx.send(result);
    })?;
    done_rx.await.unwrap_or_else(|_| Err(anyhow!("the {name} thread panicked")))
}
