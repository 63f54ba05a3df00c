//! Groups concurrent requests into one round trip (a database statement, a bus message).
//! Under light load a batch is a single item and nothing waits; under heavy load items queue
//! while a batch runs and the next batch takes them all.

use std::future::Future;

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

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
    /// Runs `apply` on batches of at most `max_batch` items, up to `in_flight` batches at
    /// once: while one batch waits for its round trip (a commit, an ack), the next one runs.
    /// `apply` returns one output per input, in order. When a whole batch fails, its items
    /// are retried one by one, so one bad item fails alone.
    pub fn spawn<F, Fut, E>(max_batch: usize, in_flight: usize, apply: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Job<I, O>>(max_batch * 4);
        let apply = Arc::new(apply);
        let slots = Arc::new(Semaphore::new(in_flight.max(1)));
        tokio::spawn(async move {
            loop {
                // A slot first, then the batch: while every slot is busy, requests queue up
                // and the next batch takes them all.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut jobs: Vec<Job<I, O>> = Vec::with_capacity(max_batch);
                if rx.recv_many(&mut jobs, max_batch).await == 0 {
                    return;
                }
                let apply = apply.clone();
                tokio::spawn(async move {
                    run(&*apply, jobs).await;
                    drop(slot);
                });
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

/// Applies one batch and answers each of its requests.
async fn run<I, O, F, Fut, E>(apply: &F, mut jobs: Vec<Job<I, O>>)
where
    I: Clone,
    F: Fn(Vec<I>) -> Fut,
    Fut: Future<Output = Result<Vec<O>, E>>,
    E: std::fmt::Display,
{
    let inputs: Vec<I> = jobs.iter().map(|(i, _)| i.clone()).collect();
    match apply(inputs).await {
        Ok(outputs) if outputs.len() == jobs.len() => {
            for ((_, reply), out) in jobs.drain(..).zip(outputs) {
                let _ = reply.send(Ok(out));
            }
        }
        Ok(_) => {
            for (_, reply) in jobs.drain(..) {
                let _ = reply.send(Err("batch returned the wrong number of results".into()));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_request_gets_its_own_output_with_at_most_in_flight_batches_at_once() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let batcher = {
            let (running, most) = (running.clone(), most.clone());
            Batcher::spawn(16, 2, move |inputs: Vec<u32>| {
                let (running, most) = (running.clone(), most.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, String>(inputs.into_iter().map(|i| i * 2).collect())
                }
            })
        };
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..500u32 {
            let batcher = batcher.clone();
            tasks.spawn(async move { (i, batcher.submit(i).await.unwrap()) });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, out) = done.unwrap();
            assert_eq!(out, i * 2);
        }
        // 500 requests in batches of 16: the two slots were both used, never more.
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_batch_is_retried_item_by_item_so_one_bad_item_fails_alone() {
        let batcher = Batcher::spawn(8, 2, |inputs: Vec<u32>| async move {
            if inputs.contains(&3) {
                return Err("3 is bad".to_owned());
            }
            Ok(inputs)
        });
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8u32 {
            let batcher = batcher.clone();
            tasks.spawn(async move { (i, batcher.submit(i).await) });
        }
        while let Some(done) = tasks.join_next().await {
            match done.unwrap() {
                (3, out) => assert_eq!(out, Err("3 is bad".to_owned())),
                (i, out) => assert_eq!(out, Ok(i)),
            }
        }
    }
}
