//! Groups concurrent requests into one database round trip. Under light load a batch is a
//! single item and nothing waits; under heavy load items queue while a batch runs and the
//! next batch takes them all.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

type Job<I, O> = (I, oneshot::Sender<Result<O, String>>);

pub struct Batcher<I, O> {
    tx: mpsc::Sender<Job<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<I, O> Batcher<I, O>
where
    I: Clone + Send + 'static,
    O: Send + 'static,
{
    /// Runs `apply` on batches of at most `max_batch` items. `apply` returns one output per
    /// input, in order. When a whole batch fails, its items are retried one by one, so one
    /// bad item fails alone.
    pub fn spawn<F, Fut, E>(max_batch: usize, apply: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<O>, E>> + Send,
        E: std::fmt::Display + Send,
    {
        let (tx, mut rx) = mpsc::channel::<Job<I, O>>(max_batch * 4);
        tokio::spawn(async move {
            let mut jobs: Vec<Job<I, O>> = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut jobs, max_batch).await > 0 {
                let inputs: Vec<I> = jobs.iter().map(|(i, _)| i.clone()).collect();
                match apply(inputs).await {
                    Ok(outputs) if outputs.len() == jobs.len() => {
                        for ((_, reply), out) in jobs.drain(..).zip(outputs) {
                            let _ = reply.send(Ok(out));
                        }
                    }
                    Ok(_) => {
                        for (_, reply) in jobs.drain(..) {
                            let _ = reply
                                .send(Err("batch returned the wrong number of results".into()));
                        }
                    }
                    Err(e) if jobs.len() == 1 => {
                        for (_, reply) in jobs.drain(..) {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, size = jobs.len(), "batch failed; retrying its items one by one");
                        for (input, reply) in jobs.drain(..) {
                            let result = match apply(vec![input]).await {
                                Ok(mut out) if out.len() == 1 => {
                                    out.pop().ok_or_else(|| "empty result".to_owned())
                                }
                                Ok(_) => Err("batch returned the wrong number of results".into()),
                                Err(e) => Err(e.to_string()),
                            };
                            let _ = reply.send(result);
                        }
                    }
                }
            }
        });
        Batcher { tx }
    }

    /// Submits one item and waits for its output.
    pub async fn submit(&self, input: I) -> Result<O, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((input, reply))
            .await
            .map_err(|_| "batcher stopped".to_owned())?;
        rx.await
            .map_err(|_| "batcher dropped the request".to_owned())?
    }
}
