//! Statement helpers shared by every operation: each statement is prepared
//! once per connection (deadpool's statement cache) and then costs a single
//! round trip, or none of its own when pipelined with others.
//!
//! Pipelining: statements started together with [`pipeline!`] on one
//! connection are sent in argument order (a biased join polls them in that
//! order) and the server runs them in that order, so a later one may rely on
//! an earlier one's effects and, under READ COMMITTED, sees everything that
//! committed before it started, including while an earlier one waited.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

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

pub(super) async fn rows<C: GenericClient>(
    db: &C,
    sql: &str,
    params: Params<'_>,
) -> Outcome<Vec<Row>> {
    let statement = db.prepare_cached(sql).await?;
    Ok(db.query(&statement, params).await?)
}

pub(super) async fn row<C: GenericClient>(
    db: &C,
    sql: &str,
    params: Params<'_>,
) -> Outcome<Option<Row>> {
    let statement = db.prepare_cached(sql).await?;
    Ok(db.query_opt(&statement, params).await?)
}

pub(super) async fn execute<C: GenericClient>(
    db: &C,
    sql: &str,
    params: Params<'_>,
) -> Outcome<u64> {
    let statement = db.prepare_cached(sql).await?;
    Ok(db.execute(&statement, params).await?)
}

/// The single value of a statement that always returns one row (`count`,
/// `EXISTS`, ...).
pub(super) async fn scalar<C, T>(db: &C, sql: &str, params: Params<'_>) -> Outcome<T>
where
    C: GenericClient,
    T: for<'r> FromSql<'r>,
{
    let statement = db.prepare_cached(sql).await?;
    let row = db.query_one(&statement, params).await?;
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
