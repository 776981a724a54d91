//! The one way a subsystem answers reads: a request carries a reply channel, and the subsystem's loop answers it
//! between its own events, so no reader ever holds the subsystem's state.

use tokio::sync::{mpsc, oneshot};

/// The asking side, held in a subsystem's handle. A stopped subsystem answers with `V::default()` (empty).
pub struct Views<V>(mpsc::Sender<oneshot::Sender<V>>);

/// The answering side, polled by the subsystem's loop.
pub type ViewRequests<V> = mpsc::Receiver<oneshot::Sender<V>>;

impl<V> Clone for Views<V> {
    fn clone(&self) -> Self {
        Views(self.0.clone())
    }
}

pub fn channel<V>() -> (Views<V>, ViewRequests<V>) {
    let (tx, rx) = mpsc::channel(16);
    (Views(tx), rx)
}

impl<V: Default> Views<V> {
    pub async fn get(&self) -> V {
        let (tx, rx) = oneshot::channel();
        if self.0.send(tx).await.is_err() {
            return V::default();
        }
        rx.await.unwrap_or_default()
    }
}
