//! Work handed to a thread of its own through a bounded channel, so that
//! it runs beside the thread producing its input (the identity graph
//! beside the contract checks, a Parquet file's encoding beside the query
//! feeding it), and the joining of helper threads.

use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;

/// A thread that takes messages until the sender is dropped or it stops on
/// an error, and then returns what it made.
pub(crate) struct Worker<M, R, E> {
    inbox: Option<SyncSender<M>>,
    thread: Option<JoinHandle<Result<R, E>>>,
}

impl<M: Send + 'static, R: Send + 'static, E: Send + 'static> Worker<M, R, E> {
    /// Starts `work` on a thread named `name` with the messages to come, of
    /// which at most `capacity` wait: a few keep both threads busy, more
    /// only hold memory.
    pub fn start(
        name: &str,
        capacity: usize,
        work: impl FnOnce(Receiver<M>) -> Result<R, E> + Send + 'static,
    ) -> Self {
        let (inbox, messages) = std::sync::mpsc::sync_channel(capacity);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || work(messages))
            .expect("a thread starts");
        Worker { inbox: Some(inbox), thread: Some(thread) }
    }

    /// Hands `message` over; once the thread has stopped on an error, that
    /// error (a panic on it goes on here). Not to be called again after an
    /// error.
    pub fn send(&mut self, message: M) -> Result<(), E> {
        let inbox = self.inbox.as_ref().expect("a running worker");
        if inbox.send(message).is_ok() {
            return Ok(());
        }
        self.inbox = None;
        match joined(self.thread.take().expect("a worker is sent nothing after its error").join()) {
            Err(e) => Err(e),
            Ok(_) => unreachable!("a worker takes messages until it fails or its sender is dropped"),
        }
    }

    /// What the thread made from every message sent, or its error.
    pub fn finish(mut self) -> Result<R, E> {
        self.inbox = None;
        joined(self.thread.take().expect("a running worker").join())
    }
}

impl<M, R, E> Drop for Worker<M, R, E> {
    /// A worker not finished (its producer failed) stops once it has taken
    /// the messages already sent; its result is dropped.
    fn drop(&mut self) {
        self.inbox = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A joined thread's result (`handle.join()`, scoped or not); its panic
/// goes on in the joining thread.
pub(crate) fn joined<T>(result: std::thread::Result<T>) -> T {
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
