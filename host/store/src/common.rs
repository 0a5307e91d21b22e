//! Pieces both backends share: error mapping, decoding of stored values, batch planning and the power-of-two chunking
//! that keeps multi-row statements in the prepared-statement cache.
//!
//! Nothing here touches a connection; it owns no SQL that is specific to one database.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use crate::{EnqueueOutcome, EnvelopeKind, NewEnvelope, StoreError, UnixMs};

/// Turn a unique-constraint violation into [`StoreError::Conflict`] naming `what`; any other error stays a database
/// error.
pub(crate) fn conflict_or(err: sqlx::Error, what: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what.to_owned()),
        _ => StoreError::Database(err),
    }
}

/// A stored value that cannot be what the schema promises: the file was edited by hand or is corrupt.
pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(format!("corrupt stored value: {what}").into()))
}

/// A stored 32-byte key.
pub(crate) fn key32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32], StoreError> {
    bytes.try_into().map_err(|_| corrupt(what))
}

/// A stored envelope kind.
pub(crate) fn kind(v: i64) -> Result<EnvelopeKind, StoreError> {
    EnvelopeKind::from_i64(v).ok_or_else(|| corrupt("envelope kind"))
}

/// Status reported for a user who never chose one.
pub(crate) const DEFAULT_STATUS: &str = "online";

/// The largest number of rows one multi-row statement carries. 256 rows of the widest statement (10 columns) bind
/// 2560 parameters: far below SQLite's limit (32766) and PostgreSQL's (65535).
pub(crate) const MAX_CHUNK: usize = 256;

/// Split `n` rows into chunks whose sizes are powers of two no larger than [`MAX_CHUNK`], largest first.
///
/// Why powers of two: a multi-row statement's text depends on its row count, and the prepared-statement cache is
/// keyed by text. With arbitrary remainders every batch size would prepare a new statement; with powers of two there
/// are only nine shapes per statement, all of which stay cached.
pub(crate) fn chunk_sizes(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= MAX_CHUNK { MAX_CHUNK } else { 1 << (usize::BITS - 1 - n.leading_zeros()) };
        n -= size;
        Some(size)
    })
}

/// The texts of one multi-row statement for every chunk size [`chunk_sizes`] can yield.
pub(crate) struct MultiRowSql {
    /// Index `i` holds the statement for `2^i` rows.
    by_log2: Vec<Arc<str>>,
}

impl MultiRowSql {
    /// `row(first_param_index)` renders one row's placeholder tuple; rows are joined with `,` between `head` and
    /// `tail`.
    pub(crate) fn new(head: &str, tail: &str, row: impl Fn(usize) -> String, params_per_row: usize) -> Self {
        let mut by_log2 = Vec::new();
        let mut rows = 1;
        while rows <= MAX_CHUNK {
            let body: Vec<String> = (0..rows).map(|r| row(r * params_per_row + 1)).collect();
            by_log2.push(Arc::from(format!("{head}{}{tail}", body.join(","))));
            rows *= 2;
        }
        MultiRowSql { by_log2 }
    }

    /// The statement for `rows` rows (a size [`chunk_sizes`] yielded).
    pub(crate) fn get(&self, rows: usize) -> sqlx::AssertSqlSafe<Arc<str>> {
        debug_assert!(rows.is_power_of_two() && rows <= MAX_CHUNK);
        let idx = rows.trailing_zeros() as usize;
        // Built only from the constant fragments given to `new`, never from data.
        sqlx::AssertSqlSafe(self.by_log2[idx.min(self.by_log2.len() - 1)].clone())
    }
}

/// What an enqueue batch does before any duplicate check against the database: the first occurrence of each id is a
/// candidate to store; later occurrences in the same batch repeat it.
pub(crate) struct EnqueuePlan {
    /// Batch indexes of first occurrences, in batch order.
    pub(crate) candidates: Vec<usize>,
    /// For each batch index: `None` if it is a candidate, `Some(i)` if it repeats the candidate at batch index `i`.
    pub(crate) repeats: Vec<Option<usize>>,
}

impl EnqueuePlan {
    /// Plan `batch`.
    pub(crate) fn new(batch: &[NewEnvelope]) -> Self {
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
        let mut candidates = Vec::with_capacity(batch.len());
        let mut repeats = Vec::with_capacity(batch.len());
        for (i, env) in batch.iter().enumerate() {
            match first.entry(env.id.as_str()) {
                Entry::Occupied(o) => repeats.push(Some(*o.get())),
                Entry::Vacant(v) => {
                    v.insert(i);
                    candidates.push(i);
                    repeats.push(None);
                }
            }
        }
        EnqueuePlan { candidates, repeats }
    }

    /// The outcomes in batch order, given which candidates were stored now and the original acceptance time of those
    /// that already existed.
    pub(crate) fn outcomes(
        &self,
        batch: &[NewEnvelope],
        stored: &[bool],
        existing: &HashMap<String, UnixMs>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let mut out = Vec::with_capacity(batch.len());
        for (i, env) in batch.iter().enumerate() {
            let first = self.repeats[i].unwrap_or(i);
            let outcome = if self.repeats[i].is_none() && stored[i] {
                EnqueueOutcome::Stored
            } else if stored[first] {
                // A repeat of an id stored earlier in this same batch.
                EnqueueOutcome::Duplicate { created_at: batch[first].created_at }
            } else {
                // The id was already in the database; it cannot vanish inside our transaction.
                let created_at = existing.get(&env.id).copied().ok_or_else(|| corrupt("envelope id lookup"))?;
                EnqueueOutcome::Duplicate { created_at }
            };
            out.push(outcome);
        }
        Ok(out)
    }
}

/// The payload to store in an envelope's own row: none at all when no device will ever fetch it, so nothing is kept
/// that no acknowledgement would clear; none either when exactly one device will (see [`queue_payload`]).
pub(crate) fn stored_payload(env: &NewEnvelope) -> &[u8] {
    if env.recipient_devices.is_empty() || payload_in_queue_row(env) { &[] } else { &env.payload }
}

/// The payload to store in the queue row of the envelope's `n`th recipient device (`None`: the envelope row's is
/// fetched). A per-device ciphertext always goes there; so does the shared payload of an envelope for exactly one
/// device — the usual 1:1 message — so that its ack deletes the payload with the queue row, instead of a second
/// write rewriting the envelope row to clear it (docs/performance.md). Shared by several devices, it is stored once,
/// in the envelope row, and cleared when the last of them acked.
pub(crate) fn queue_payload(env: &NewEnvelope, n: usize) -> Option<&[u8]> {
    match env.device_payloads.get(n) {
        Some(p) => Some(p.as_slice()),
        None if payload_in_queue_row(env) => Some(env.payload.as_slice()),
        None => None,
    }
}

fn payload_in_queue_row(env: &NewEnvelope) -> bool {
    env.device_payloads.is_empty() && env.recipient_devices.len() == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_summing_to_n() {
        for n in [0usize, 1, 2, 3, 7, 100, 255, 256, 257, 500, 1000, 1025] {
            let sizes: Vec<usize> = chunk_sizes(n).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n, "n = {n}");
            assert!(sizes.iter().all(|s| s.is_power_of_two() && *s <= MAX_CHUNK));
        }
    }

    #[test]
    fn multi_row_sql_numbers_parameters() {
        let sql = MultiRowSql::new("INSERT INTO t VALUES ", " RETURNING x", |p| format!("(?{p},?{})", p + 1), 2);
        assert_eq!(&*sql.get(1).0, "INSERT INTO t VALUES (?1,?2) RETURNING x");
        assert_eq!(&*sql.get(2).0, "INSERT INTO t VALUES (?1,?2),(?3,?4) RETURNING x");
    }
}
