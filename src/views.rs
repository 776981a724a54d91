//! The one way a subsystem answers reads: a request (`Q`, e.g. which page) carries a reply channel, and the
//! subsystem's loop answers it between its own events, so no reader ever holds the subsystem's state.

use tokio::sync::{mpsc, oneshot};

/// The asking side, held in a subsystem's handle. A stopped subsystem answers with `V::default()` (empty).
pub struct Views<Q, V>(mpsc::Sender<(Q, oneshot::Sender<V>)>);

/// The answering side, polled by the subsystem's loop.
pub type ViewRequests<Q, V> = mpsc::Receiver<(Q, oneshot::Sender<V>)>;

impl<Q, V> Clone for Views<Q, V> {
    fn clone(&self) -> Self {
        Views(self.0.clone())
    }
}

pub fn channel<Q, V>() -> (Views<Q, V>, ViewRequests<Q, V>) {
    let (tx, rx) = mpsc::channel(16);
    (Views(tx), rx)
}

impl<Q, V: Default> Views<Q, V> {
    pub async fn get(&self, query: Q) -> V {
        let (tx, rx) = oneshot::channel();
        if self.0.send((query, tx)).await.is_err() {
            return V::default();
        }
        rx.await.unwrap_or_default()
    }
}
