//! Event subscriptions: one unbounded queue per subscriber, so a slow
//! subscriber never makes another miss an event (nodeup/nodedown, pg
//! join/leave). Owns only the queue types; publishers live in node.rs/pg.rs.

use tokio::sync::mpsc;

/// A stream of events of type `T` from the moment of subscription.
/// Use [`Events::recv`] or the `futures::Stream` impl.
#[derive(Debug)]
pub struct Events<T> {
    rx: mpsc::UnboundedReceiver<T>,
}

impl<T> Events<T> {
    /// Next event; `None` once the publisher is gone (node or scope stopped).
    pub async fn recv(&mut self) -> Option<T> {
        self.rx.recv().await
    }
}

impl<T> futures::Stream for Events<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }
}

/// The publishing side: a list of subscriber queues.
#[derive(Debug)]
pub(crate) struct Subscribers<T> {
    subs: Vec<mpsc::UnboundedSender<T>>,
}

impl<T> Default for Subscribers<T> {
    fn default() -> Self {
        Subscribers { subs: Vec::new() }
    }
}

impl<T: Clone> Subscribers<T> {
    pub(crate) fn subscribe(&mut self) -> Events<T> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subs.push(tx);
        Events { rx }
    }

    /// Sends to every live subscriber, forgetting those that went away.
    pub(crate) fn emit(&mut self, ev: T) {
        self.subs.retain(|s| s.send(ev.clone()).is_ok());
    }

    pub(crate) fn clear(&mut self) {
        self.subs.clear();
    }
}
