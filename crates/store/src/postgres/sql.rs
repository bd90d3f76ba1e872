//! Statement helpers shared by every operation: each statement is prepared
//! once per connection (deadpool's statement cache) and then costs a single
//! round trip, or none of its own when pipelined with others.
//!
//! Pipelining: statements started together with [`pipeline!`] (or
//! [`in_order`]) on one connection are sent in argument order (a biased
//! join polls them in that order) and the server runs them in that order,
//! so a later one may rely on an earlier one's effects and, under READ
//! COMMITTED, sees everything that committed before it started, including
//! while an earlier one waited.
//!
//! That holds only if a statement is sent when it is first polled. One not
//! yet in the cache must first be prepared (a round trip), and a cached one
//! behind it would be sent, and run, before it. So inside [`ordered`] (every
//! operation runs there) a statement being prepared holds back every later
//! statement of the same task until it has been sent itself.

use std::cell::RefCell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Poll, Waker};

use deadpool_postgres::GenericClient;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Row, Statement};

use super::fault::{Fault, Outcome};

/// Runs statements pipelined, in the order given (see the module doc), and
/// returns all their results or the first error. Each argument is a future
/// of an `Outcome`; temporaries in it live as long as it runs.
macro_rules! pipeline {
    ($($statement:expr),+ $(,)?) => {
        tokio::try_join!(biased; $(async { $statement.await }),+)
    };
}
pub(super) use pipeline;

/// One statement (or a group of them) of a pipeline whose length is known
/// only at run time; see [`in_order`].
pub(super) type Step<'a, T> = Pin<Box<dyn Future<Output = Outcome<T>> + Send + 'a>>;

/// Runs `steps` pipelined, like [`pipeline!`] for a list: each poll visits
/// them in order, so the statements a step sends on its first poll go out
/// before the next step's. Returns every result, in order, or the first
/// error.
pub(super) async fn in_order<T>(steps: Vec<Step<'_, T>>) -> Outcome<Vec<T>> {
    let mut running: Vec<Option<Step<'_, T>>> = steps.into_iter().map(Some).collect();
    let mut results: Vec<Option<T>> = running.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (slot, result) in running.iter_mut().zip(results.iter_mut()) {
            let Some(step) = slot else { continue };
            match step.as_mut().poll(cx) {
                Poll::Ready(Ok(value)) => {
                    *result = Some(value);
                    *slot = None;
                }
                Poll::Ready(Err(fault)) => return Poll::Ready(Err(fault)),
                Poll::Pending => waiting = true,
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    })
    .await?;
    Ok(results.into_iter().flatten().collect())
}

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Runs `statement` only `when` there is work for it, else gives its empty
/// result; nothing is sent (a future does nothing until polled).
pub(super) async fn only_if<T: Default>(
    when: bool,
    statement: impl Future<Output = Outcome<T>>,
) -> Outcome<T> {
    if when {
        statement.await
    } else {
        Ok(T::default())
    }
}

/// Whether a statement of this task is being prepared, so later ones must
/// wait to be sent; and the wakers of those waiting.
#[derive(Default)]
struct Hold {
    active: bool,
    waiting: Vec<Waker>,
}

tokio::task_local! {
    static PREPARING: RefCell<Hold>;
}

/// Runs `op`, an operation's statements, keeping their send order (see the
/// module doc).
pub(super) async fn ordered<F: Future>(op: F) -> F::Output {
    PREPARING.scope(RefCell::new(Hold::default()), op).await
}

/// Marks this task's statements as held back while it lives.
struct Preparing;

impl Preparing {
    fn start() -> Self {
        let _ = PREPARING.try_with(|hold| hold.borrow_mut().active = true);
        Self
    }
}

impl Drop for Preparing {
    fn drop(&mut self) {
        // Wakes the statements held back: nothing else may, if the one
        // that held them was the task's last in flight.
        let waiting = PREPARING
            .try_with(|hold| {
                let mut hold = hold.borrow_mut();
                hold.active = false;
                std::mem::take(&mut hold.waiting)
            })
            .unwrap_or_default();
        for waker in waiting {
            waker.wake();
        }
    }
}

/// The statement for `sql`, once no earlier statement of the task is being
/// prepared. When this one has to be prepared, it returns the hold that
/// [`send`] releases once the statement is out.
async fn prepare<C: GenericClient>(db: &C, sql: &str) -> Outcome<(Statement, Option<Preparing>)> {
    // Waits, registered to be woken when the hold is released, rather than
    // counting on the held statement's answer to poll this one again: a
    // waiter whose wake-up depends on another future's is one lost wake
    // away from hanging (two conformance runs under load hung with their
    // transaction idle after a pipeline's last statement; this is the
    // suspect, not a proven cause).
    std::future::poll_fn(|cx| {
        let held = PREPARING
            .try_with(|hold| {
                let mut hold = hold.borrow_mut();
                if hold.active {
                    hold.waiting.push(cx.waker().clone());
                }
                hold.active
            })
            .unwrap_or(false);
        if held { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    let mut cached = pin!(db.prepare_cached(sql));
    match poll_once(cached.as_mut()).await {
        Poll::Ready(statement) => Ok((statement?, None)),
        Poll::Pending => {
            let hold = Preparing::start();
            Ok((cached.await?, Some(hold)))
        }
    }
}

/// Runs `query`, releasing `hold` once its first poll has sent it.
async fn send<F: Future>(hold: Option<Preparing>, query: F) -> F::Output {
    let mut query = pin!(query);
    let first = poll_once(query.as_mut()).await;
    drop(hold);
    match first {
        Poll::Ready(output) => output,
        Poll::Pending => query.await,
    }
}

async fn poll_once<F: Future>(mut future: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

pub(super) async fn rows<C: GenericClient>(
    db: &C,
    sql: &str,
    params: Params<'_>,
) -> Outcome<Vec<Row>> {
    let (statement, hold) = prepare(db, sql).await?;
    Ok(send(hold, db.query(&statement, params)).await?)
}

pub(super) async fn row<C: GenericClient>(
    db: &C,
    sql: &str,
    params: Params<'_>,
) -> Outcome<Option<Row>> {
    let (statement, hold) = prepare(db, sql).await?;
    Ok(send(hold, db.query_opt(&statement, params)).await?)
}

pub(super) async fn execute<C: GenericClient>(
    db: &C,
    sql: &str,
    params: Params<'_>,
) -> Outcome<u64> {
    let (statement, hold) = prepare(db, sql).await?;
    Ok(send(hold, db.execute(&statement, params)).await?)
}

/// The single value of a statement that always returns one row (`count`,
/// `EXISTS`, ...).
pub(super) async fn scalar<C, T>(db: &C, sql: &str, params: Params<'_>) -> Outcome<T>
where
    C: GenericClient,
    T: for<'r> FromSql<'r>,
{
    let (statement, hold) = prepare(db, sql).await?;
    let row = send(hold, db.query_one(&statement, params)).await?;
    Ok(row.try_get(0)?)
}

/// The first column of every row.
pub(super) async fn column<C, T>(db: &C, sql: &str, params: Params<'_>) -> Outcome<Vec<T>>
where
    C: GenericClient,
    T: for<'r> FromSql<'r>,
{
    rows(db, sql, params)
        .await?
        .iter()
        .map(|row| row.try_get(0).map_err(Fault::from))
        .collect()
}

/// A stored count or size as an unsigned number; a negative one is corrupt
/// data, reported rather than wrapped.
pub(super) fn unsigned(value: i64, what: &str) -> Outcome<u64> {
    u64::try_from(value).map_err(|_| Fault::Corrupt(format!("stored {what} {value} is negative")))
}

/// A stored pixel size as `u32`.
pub(super) fn pixels(value: Option<i64>) -> Outcome<Option<u32>> {
    value
        .map(|v| {
            u32::try_from(v)
                .map_err(|_| Fault::Corrupt(format!("stored pixel size {v} is out of range")))
        })
        .transpose()
}

/// A caller's `usize` limit as a SQL `LIMIT` (saturating: no limit is
/// larger than the table).
pub(super) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
    use tokio_postgres::NoTls;

    use super::*;

    /// A pooled connection to the test server (`MISSIVE_TEST_POSTGRES_URL`),
    /// or `None` (skip) outside CI without one.
    async fn connection() -> Option<deadpool_postgres::Client> {
        let url = std::env::var("MISSIVE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let config: tokio_postgres::Config = url.parse().expect("test URL");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(1).build().expect("pool");
        match pool.get().await {
            Ok(client) => Some(client),
            Err(err) if std::env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "false") => {
                panic!("PostgreSQL is required in CI: {err}")
            }
            Err(err) => {
                eprintln!("skipping: {err}");
                None
            }
        }
    }

    #[tokio::test]
    async fn a_cached_statement_does_not_overtake_one_being_prepared() {
        // Goal: in a pipeline, a statement that must first be prepared still
        // runs before the cached statement placed after it.
        // Method: a temporary table; the count is cached by a first run;
        // then a never-prepared INSERT and the count are pipelined. Run
        // outside `ordered`, the count runs first and sees 0 (the hazard
        // exists); inside, it sees the row.
        let Some(db) = connection().await else {
            return;
        };
        db.batch_execute("CREATE TEMP TABLE pipelined (n int)")
            .await
            .expect("temp table");
        let count = "SELECT count(*) FROM pipelined";
        let counted: i64 = scalar(&db, count, &[]).await.expect("warm count");
        assert_eq!(counted, 0);

        let unordered = pipeline!(
            execute(&db, "INSERT INTO pipelined VALUES (1)", &[]),
            scalar::<_, i64>(&db, count, &[]),
        )
        .expect("unordered pipeline");
        assert_eq!(unordered, (1, 0), "without the hold, the count overtakes");

        let ordered_run = ordered(async {
            pipeline!(
                execute(&db, "INSERT INTO pipelined VALUES (2)", &[]),
                scalar::<_, i64>(&db, count, &[]),
            )
        })
        .await
        .expect("ordered pipeline");
        assert_eq!(ordered_run, (1, 2), "the count runs after the insert");
    }
}
